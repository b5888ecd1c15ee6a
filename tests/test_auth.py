"""The two bearer tokens: TASKS_API_TOKEN does everything, TASKS_READ_TOKEN only reads.

Every operation of the app's own OpenAPI document (so routes added later are covered too),
with no token, a wrong one, the read token and the admin token, against a real uvicorn.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tasks_service import create_app
from tasks_service.config import Settings, SettingsError
from tests.harness import Server, ServerFactory, wait_until

pytestmark = pytest.mark.slow

ADMIN = "admin-7c1e"
READER = "reader-93fa"


def operations() -> list[tuple[str, str]]:
    """(METHOD, path template) of every documented operation, and the document itself."""
    document = create_app(Settings(db=":memory:")).openapi()
    found = [
        (method.upper(), path) for path, methods in document["paths"].items() for method in methods
    ]
    return [*found, ("GET", "/openapi.json")]


@pytest.fixture
def server(server_factory: ServerFactory, tmp_path: Path) -> Server:
    env = {
        "TASKS_API_TOKEN": ADMIN,
        "TASKS_READ_TOKEN": READER,
        "TASKS_DATA_DIR": str(tmp_path / "data"),
        "TASKS_SHUTDOWN_GRACE": "0.5",
    }
    return server_factory(env=env).start()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def ask(
    server: Server, method: str, path: str, headers: dict[str, str], **kwargs: Any
) -> Iterator[httpx.Response]:
    """The answer's status and headers; streams (event streams) are not read to their end."""
    with (
        httpx.Client(base_url=server.url, timeout=10) as client,
        client.stream(method, path, headers=headers, **kwargs) as response,
    ):
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            response.read()
        yield response


class Fixtures:
    """Real ids for the path parameters, made with the admin token."""

    def __init__(self, server: Server) -> None:
        self.server = server

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.server.url}{path}", headers=bearer(ADMIN), timeout=10, **kwargs
        )

    def new_task(self) -> str:
        response = self.call("POST", "/tasks", json={"name": "sleep", "params": {"seconds": 60}})
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def path(self, template: str) -> str:
        values = {
            "task_id": self.new_task,
            "schedule_id": lambda: "purge_tasks",
            "file_id": self.upload,
            "name": lambda: "sleep",
        }

        def fill(match: re.Match[str]) -> str:
            return values[match.group(1)]()

        return re.sub(r"\{(\w+)\}", fill, template)

    def upload(self) -> str:
        response = self.call("POST", "/files", files={"file": ("a.csv", b"a\n1\n", "text/csv")})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def state(self) -> tuple[Any, ...]:
        """What a write would change: the tasks and their statuses, the schedules."""
        tasks = self.call("GET", "/tasks", params={"limit": 500}).json()["items"]
        schedules = self.call("GET", "/schedules").json()
        return (
            sorted((t["id"], t["status"], t["cancel_requested"]) for t in tasks),
            sorted((s["id"], s["paused"]) for s in schedules),
        )


def body_for(method: str, path: str) -> dict[str, Any]:
    if (method, path) == ("POST", "/tasks"):
        return {"json": {"name": "noop"}}
    if (method, path) == ("POST", "/files"):
        return {"files": {"file": ("b.csv", b"b\n2\n", "text/csv")}}
    return {}


def test_every_endpoint_with_each_token(server: Server) -> None:
    fixtures = Fixtures(server)
    for method, template in operations():
        path = fixtures.path(template)
        kwargs = body_for(method, template)
        where = f"{method} {template}"

        for headers in ({}, bearer("wrong"), bearer(ADMIN + "x"), {"Authorization": ADMIN}):
            with ask(server, method, path, headers, **kwargs) as response:
                if template == "/health":
                    assert response.status_code == 200, where
                    continue
                assert response.status_code == 401, (where, headers)
                assert response.headers["www-authenticate"] == "Bearer"
                assert response.json() == {"detail": "missing or wrong bearer token"}

        before = fixtures.state()
        with ask(server, method, path, bearer(READER), **kwargs) as response:
            if method == "GET":
                assert response.status_code == 200, (where, response.status_code)
                if template != "/health":
                    assert response.headers["x-tasks-access"] == "read-only", where
            else:
                assert response.status_code == 403, where
                detail = response.json()["detail"]
                assert "read-only" in detail and "GET" in detail, detail
                assert response.headers["x-tasks-access"] == "read-only"
        assert fixtures.state() == before, f"{where} with the read token changed something"

        with ask(server, method, path, bearer(ADMIN), **kwargs) as response:
            # Past the token: what the route itself answers (a retry of a running task: 409).
            assert response.status_code not in (401, 403), where
            assert response.status_code < 500, (where, response.status_code)
            if template != "/health":
                assert response.headers["x-tasks-access"] == "read-write", where


def test_the_read_token_can_see_what_the_admin_did(server: Server) -> None:
    fixtures = Fixtures(server)
    task_id = fixtures.new_task()
    with ask(server, "GET", f"/tasks/{task_id}", bearer(READER)) as response:
        assert response.json()["id"] == task_id
    with ask(server, "POST", f"/tasks/{task_id}/cancel", bearer(READER)) as response:
        assert response.status_code == 403
    with ask(server, "GET", f"/tasks/{task_id}", bearer(READER)) as response:
        assert response.json()["cancel_requested"] is False
    with ask(server, "POST", f"/tasks/{task_id}/cancel", bearer(ADMIN)) as response:
        assert response.status_code in (200, 202)

    def cancelled() -> bool:
        with ask(server, "GET", f"/tasks/{task_id}", bearer(READER)) as response:
            return bool(response.json()["status"] == "cancelled")

    wait_until(cancelled, 10, "the cancel")
    with ask(server, "GET", "/metrics", bearer(READER)) as response:
        assert 'tasks{name="sleep",status="cancelled"} 1.0' in response.text
    # HEAD is a read too; a method nothing answers is refused before it is looked up.
    with ask(server, "HEAD", "/openapi.json", bearer(READER)) as response:
        assert response.status_code != 403
    with ask(server, "DELETE", "/tasks", bearer(READER)) as response:
        assert response.status_code == 403


def test_a_read_token_without_the_admin_token_stops_startup(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"TASKS_READ_TOKEN": READER})
    server.start(wait_healthy=False)
    assert server.wait(30) != 0
    log = server.log_text()
    assert "the service cannot start: TASKS_READ_TOKEN is set but TASKS_API_TOKEN is not" in log
    assert "Traceback" not in log
    assert READER not in log


def test_settings_refuse_a_read_token_alone_or_equal_to_the_admin_one() -> None:
    with pytest.raises(SettingsError, match="TASKS_API_TOKEN is not"):
        Settings.from_env({"TASKS_READ_TOKEN": READER})
    with pytest.raises(SettingsError, match="TASKS_API_TOKEN is not"):
        create_app(Settings(read_token=READER))
    with pytest.raises(SettingsError, match="must differ"):
        Settings.from_env({"TASKS_READ_TOKEN": ADMIN, "TASKS_API_TOKEN": ADMIN})
    settings = Settings.from_env({"TASKS_READ_TOKEN": READER, "TASKS_API_TOKEN": ADMIN})
    assert settings.read_token == READER
    assert READER not in repr(settings)
