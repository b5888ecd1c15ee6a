"""Real uvicorn processes, for the tests and the benchmarks alike: one way to start a server on
a free port, wait for its /health, talk to it, stop it and read its log.

    server = Server(db=tmp / "tasks.db", log_path=tmp / "server.log", env=TEST_ENV).start()
    post(server, "echo", params={"text": "hi"})
    server.stop()

Nothing here needs pytest: `python bench/x.py` imports it with the repository root on sys.path.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_MODULES = ("tests.sample_tasks",)
# What the tests' servers run with unless a test says otherwise: the sample task types, and a
# short watch interval so that what another process committed is seen quickly.
TEST_ENV = {"TASKS_MODULES": ",".join(SAMPLE_MODULES), "TASKS_WATCH_INTERVAL": "0.05"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """`uvicorn <app>` in a subprocess (cwd the repository root), as a user would run it.

    Its environment is this process's, then TASKS_DB=`db`, then `env`. It can be started
    again after a stop or a kill, on the same port, appending to the same log (or to another
    one: set `log_path` before `start`). Without a `log_path` its output goes to this
    process's stdout and stderr."""

    db: Path | str  # a SQLite file or a postgresql:// URL
    log_path: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    app: str = "main:app"
    port: int = field(default_factory=free_port)
    # Runs the command under these words (e.g. `unshare ...`); the process is their first.
    prefix: list[str] = field(default_factory=list)
    # More uvicorn options, e.g. ["--no-access-log", "--log-level", "warning"].
    args: list[str] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def command(self) -> list[str]:
        command = [sys.executable, "-m", "uvicorn", self.app]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        return [*self.prefix, *command, *self.args]

    def start(self, *, wait_healthy: bool = True, timeout: float = 30.0) -> Server:
        env = {**os.environ, "TASKS_DB": str(self.db), **self.env}
        self._close_log()
        if self.log_path is not None:
            self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command, cwd=ROOT, env=env, stdout=self._log, stderr=self._log
        )
        if wait_healthy:
            self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until GET /health answers 200. A server that exits first, or is not healthy in
        time (it is killed then), raises AssertionError with its log."""
        self._wait_for(lambda health: True, timeout, lambda: "server never became healthy")

    def wait_every_worker(self, timeout: float = 30.0) -> None:
        """Until each of the `workers` processes has answered GET /health. A health check is
        a new connection, taken by whichever worker accepts first, so once every worker has
        answered one, every worker is accepting connections."""
        answered: set[str] = set()

        def every_worker(health: dict[str, Any]) -> bool:
            answered.add(health["worker"])
            return len(answered) >= self.workers

        self._wait_for(
            every_worker,
            timeout,
            lambda: f"only {len(answered)} of the server's {self.workers} workers answered",
        )

    def _wait_for(
        self, done: Callable[[dict[str, Any]], bool], timeout: float, failure: Callable[[], str]
    ) -> None:
        assert self.process is not None, "not started"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._close_log()
                raise AssertionError(
                    f"server exited early ({self.process.returncode}){self._log_for_error()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(f"{self.url}/health", timeout=1)
                if response.status_code == 200 and done(response.json()):
                    return
            time.sleep(0.02)
        self.kill()
        raise AssertionError(f"{failure()} within {timeout:g} s{self._log_for_error()}")

    def signal(self, signum: int) -> None:
        assert self.process is not None, "not started"
        self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL, and wait until it is gone."""
        self.signal(signal.SIGKILL)
        self.wait()

    def wait(self, timeout: float = 60.0) -> int:
        """Until it exits; its exit code (negative: killed by that signal)."""
        assert self.process is not None, "not started"
        code = self.process.wait(timeout)
        self._close_log()
        return code

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a clean shutdown), SIGKILL if it is not over within `timeout`."""
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def log_text(self) -> str:
        """What it has logged so far ("" without a log file)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def _log_for_error(self) -> str:
        if self.log_path is None:
            return " (its output is above)"
        return f", its log {self.log_path}:\n{self.log_text()}"

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


ServerFactory = Callable[..., Server]


def stop_all(servers: Iterable[Server], timeout: float = 30.0) -> None:
    """Stop servers at once: SIGTERM to each, then SIGKILL to any still up after `timeout`."""
    running = [s for s in servers if s.process is not None and s.process.poll() is None]
    for server in running:
        server.signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for server in running:
        try:
            server.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            server.kill()
    for server in servers:
        server._close_log()


# -- waiting ---------------------------------------------------------------------------------


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Await `check` until it is true (in an event loop: in-process apps)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition never became true")
        await asyncio.sleep(0.02)


def wait_until(check: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    """Call `check` until it is true (blocking: servers in other processes)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.05)


# -- the API of a running server -------------------------------------------------------------


def post(server: Server, name: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{server.url}/tasks", json={"name": name, **body}, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()


def get(server: Server, task_id: str) -> dict[str, Any]:
    response = httpx.get(f"{server.url}/tasks/{task_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def all_tasks(server: Server | str) -> list[dict[str, Any]]:
    """Every task GET /tasks lists, all pages; of a Server or a base URL."""
    url = server if isinstance(server, str) else server.url
    tasks: list[dict[str, Any]] = []
    cursor = None
    with httpx.Client(base_url=url, timeout=30) as http:
        while True:
            params: dict[str, Any] = {"limit": 500}
            if cursor:
                params["cursor"] = cursor
            response = http.get("/tasks", params=params)
            response.raise_for_status()
            page = response.json()
            tasks.extend(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                return tasks


def stop_gracefully(server: Server) -> None:
    """SIGTERM, then a clean exit (uvicorn re-raises the signal once shut down)."""
    server.signal(signal.SIGTERM)
    assert server.wait() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.log_text()
