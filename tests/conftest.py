"""Shared fixtures: the app in-process over ASGI, real uvicorn processes, a real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from tasks_service import TaskService, create_app
from tasks_service.config import Settings
from tasks_service.models import TaskStatus
from tests.mailbox import Mail, Mailbox, StartServer
from tests.postgres import PostgresError, PostgresServer

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_MODULES = ("tests.sample_tasks",)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def database(tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """TASKS_DB of the app under test: a SQLite file, unless the module parametrises this
    fixture with "postgres" too (`BOTH_STORES`), then also a fresh PostgreSQL database."""
    if getattr(request, "param", "sqlite") == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return str(tmp_path / "tasks.db")


# In a module's `pytestmark`: each of its tests that runs the app runs on SQLite and on
# PostgreSQL.
BOTH_STORES = pytest.mark.both_stores


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "both_stores"
    ):
        metafunc.parametrize("database", ["sqlite", "postgres"], indirect=True)


@pytest.fixture
def settings(tmp_path: Path, database: str) -> Settings:
    return Settings(
        db=database,
        modules=SAMPLE_MODULES,
        data_dir=tmp_path / "data",
        watch_interval=0.05,
        shutdown_grace=2.0,
        log_level="WARNING",
    )


@dataclass
class App:
    """The app running in this process: an HTTP client for it, and its Python API."""

    client: httpx.AsyncClient
    service: TaskService

    async def post_task(self, name: str, **body: Any) -> dict[str, Any]:
        response = await self.client.post("/tasks", json={"name": name, **body})
        assert response.status_code == 202, response.text
        return response.json()

    async def task(self, task_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/tasks/{task_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_for(self, task_id: str, *statuses: str, timeout: float = 15.0) -> dict[str, Any]:
        """Poll until the task reaches one of `statuses` (terminal ones by default)."""
        wanted = set(statuses or ("completed", "failed", "cancelled"))
        deadline = time.monotonic() + timeout
        while True:
            task = await self.task(task_id)
            if task["status"] in wanted:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task never became {wanted}: {task}")
            await asyncio.sleep(0.02)


AppFactory = Callable[..., Awaitable[App]]


@pytest.fixture
async def make_app(settings: Settings) -> AsyncIterator[AppFactory]:
    """Start the app (lifespan included) with settings overrides; stopped at teardown."""
    stack = contextlib.AsyncExitStack()

    async def start(**overrides: Any) -> App:
        application = create_app(replace(settings, **overrides))
        await stack.enter_async_context(application.router.lifespan_context(application))
        transport = httpx.ASGITransport(app=application)
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://test")
        )
        return App(client, application.state.service)

    async with stack:
        yield start


@pytest.fixture
async def app(make_app: AppFactory) -> App:
    return await make_app()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        await asyncio.sleep(0.02)


# -- real uvicorn processes ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """`uvicorn main:app` in a subprocess, as a user would run it."""

    db: Path | str  # a SQLite file or a postgresql:// URL
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    app: str = "main:app"
    port: int = field(default_factory=free_port)
    # Runs the command under these words (e.g. `unshare ...`); the process is their first.
    prefix: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    _log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, wait_healthy: bool = True) -> Server:
        env = {
            **os.environ,
            "TASKS_DB": str(self.db),
            "TASKS_MODULES": ",".join(SAMPLE_MODULES),
            "TASKS_WATCH_INTERVAL": "0.05",
            **self.env,
        }
        command = [sys.executable, "-m", "uvicorn", self.app, "--port", str(self.port)]
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        command = [*self.prefix, *command]
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self._log, stderr=self._log
        )
        if wait_healthy:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log_path.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"server never became healthy:\n{self.log_path.read_text()}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = 60.0) -> int:
        assert self.process is not None
        code = self.process.wait(timeout)
        self._close_log()
        return code

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@pytest.fixture
def server_factory(tmp_path: Path, database: str) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def make(**kwargs: Any) -> Server:
        kwargs.setdefault("db", database)
        kwargs.setdefault("log_path", tmp_path / "server.log")
        server = Server(**kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


def statuses(tasks: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task["status"]] = counts.get(task["status"], 0) + 1
    return counts


TERMINAL = {s.value for s in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)}


@pytest.fixture
def smtp_server() -> Iterator[StartServer]:
    """Start aiosmtpd servers on 127.0.0.1 (SMTP keyword arguments pass through)."""
    started: list[Controller] = []

    def start(**kwargs: Any) -> Mail:
        mailbox = Mailbox()
        port = free_port()
        controller = Controller(
            mailbox, hostname="127.0.0.1", port=port, server_hostname="mail.test", **kwargs
        )
        controller.start()
        started.append(controller)
        return Mail(mailbox, port)

    yield start
    for controller in started:
        controller.stop()


# -- a real PostgreSQL server ----------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One server for the whole run: initdb and start take ~0.5 s, a database 20-80 ms."""
    server = PostgresServer(tmp_path_factory.mktemp("postgres"))
    server.start()
    yield server
    server.stop()


_database_numbers = itertools.count()


@pytest.fixture
def pg_url(postgres: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database for this test alone, named after it, dropped afterwards."""
    slug = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())
    name = f"test{next(_database_numbers)}_{slug}"[:63]
    postgres.create_database(name)
    yield postgres.url(name)
    if not postgres.running:  # the test stopped or killed the server: the next one needs it
        postgres.start()
    with contextlib.suppress(PostgresError):
        postgres.drop_database(name)  # WITH (FORCE): connections the test left open go too
