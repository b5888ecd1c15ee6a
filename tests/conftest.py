"""Fixtures only: the app in-process over ASGI, real uvicorn processes, a real PostgreSQL.

Their helpers are in tests/helpers.py (in-process) and tests/harness.py (uvicorn processes)."""

from __future__ import annotations

import contextlib
import itertools
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from tasks_service import create_app
from tasks_service.config import Settings
from tests.harness import SAMPLE_MODULES, TEST_ENV, Server, ServerFactory, free_port
from tests.helpers import BOTH_STORES, App, AppFactory
from tests.mailbox import Mail, Mailbox, StartServer
from tests.postgres import PostgresError, PostgresServer


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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        BOTH_STORES.name
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


# -- real uvicorn processes ------------------------------------------------------------------


@pytest.fixture
def server_factory(tmp_path: Path, database: str) -> Iterator[ServerFactory]:
    """Servers (tests.harness.Server, not started) on the test's database, logging to
    server.log, with TEST_ENV under the `env` given; stopped at teardown."""
    started: list[Server] = []

    def make(**kwargs: Any) -> Server:
        kwargs.setdefault("db", database)
        kwargs.setdefault("log_path", tmp_path / "server.log")
        kwargs["env"] = {**TEST_ENV, **kwargs.get("env", {})}
        server = Server(**kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


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
