"""Limits and pauses hold across processes: `--workers 2` on SQLite, two instances on one
PostgreSQL database, and a pause across a restart (real uvicorn, real HTTP)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.harness import ServerFactory, get, post, stop_gracefully, wait_until
from tests.helpers import BOTH_STORES
from tests.limits import most_at_once, most_at_once_by_key, spans

pytestmark = pytest.mark.slow

MODULES = "tests.limited_tasks,tests.sample_tasks"


def run_all(urls: list[str], name: str, bodies: list[dict[str, object]]) -> list[str]:
    """POST each body to the servers in turn; wait until every task has completed."""
    ids = []
    for number, params in enumerate(bodies):
        url = urls[number % len(urls)]
        response = httpx.post(f"{url}/tasks", json={"name": name, "params": params}, timeout=10)
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])

    def all_completed() -> bool:
        return all(
            httpx.get(f"{urls[0]}/tasks/{i}", timeout=10).json()["status"] == "completed"
            for i in ids
        )

    wait_until(all_completed, 60, "every limited task to complete")
    return ids


def test_limits_hold_across_workers_on_sqlite(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    # One slot per process, three processes: more slots than the limit, so only a limit
    # counted across processes keeps to it, and reaching it takes two processes.
    env = {"TASKS_MODULES": MODULES, "TASKS_CONCURRENCY": "1"}
    server = server_factory(db=tmp_path / "tasks.db", env=env, workers=3)
    server.start()
    server.wait_every_worker()
    capped, keyed = tmp_path / "capped", tmp_path / "keyed"
    run_all([server.url], "capped", [{"path": str(capped), "seconds": 0.3}] * 12)
    bodies = [{"account": a, "path": str(keyed), "seconds": 0.2} for a in "ab" for _ in range(4)]
    run_all([server.url], "per_account", bodies)
    assert most_at_once([(s, e) for s, e, _ in spans(capped).values()]) == 2
    assert most_at_once_by_key(keyed) == {"a": 1, "b": 1}


def test_limits_hold_across_two_instances_on_postgresql(
    server_factory: ServerFactory, pg_url: str, tmp_path: Path
) -> None:
    # One slot per instance: reaching the limit of two takes both hosts, so the limit is
    # counted across them (claims on one host alone would never show two at once).
    env = {"TASKS_MODULES": MODULES, "TASKS_CONCURRENCY": "1"}
    servers = [server_factory(db=pg_url, env=env, log_path=tmp_path / f"{n}.log") for n in "ab"]
    for server in servers:
        server.start()
    capped, keyed = tmp_path / "capped", tmp_path / "keyed"
    urls = [s.url for s in servers]
    run_all(urls, "capped", [{"path": str(capped), "seconds": 0.3}] * 12)
    bodies = [{"account": a, "path": str(keyed), "seconds": 0.2} for a in "ab" for _ in range(4)]
    run_all(urls, "per_account", bodies)
    assert most_at_once([(s, e) for s, e, _ in spans(capped).values()]) == 2
    assert most_at_once_by_key(keyed) == {"a": 1, "b": 1}
    assert len({line.split()[3] for line in capped.read_text().splitlines()}) == 2


@BOTH_STORES
def test_a_pause_is_kept_across_a_restart(server_factory: ServerFactory, tmp_path: Path) -> None:
    env = {"TASKS_MODULES": MODULES}
    server = server_factory(env=env).start()
    assert httpx.post(f"{server.url}/task-types/echo/pause", timeout=10).json()["paused"]
    task = post(server, "echo", params={"text": "held"})
    stop_gracefully(server)
    server = server_factory(env=env).start()
    types = {t["name"]: t for t in httpx.get(f"{server.url}/task-types", timeout=10).json()}
    assert types["echo"]["paused"] is True
    assert get(server, task["id"])["waiting_for"] == "paused"
    httpx.post(f"{server.url}/task-types/echo/resume", timeout=10)
    wait_until(lambda: get(server, task["id"])["status"] == "completed", 15, "the resumed task")
