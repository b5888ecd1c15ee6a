"""Concurrency and rate limits per task type and per key, pausing a type, and `waiting_for`:
in-process on both stores, read from what really ran."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.harness import eventually
from tests.helpers import BOTH_STORES, App, AppFactory
from tests.limits import most_at_once, most_at_once_by_key, most_in_window, spans

pytestmark = [pytest.mark.anyio, BOTH_STORES]

MODULES = ("tests.limited_tasks", "tests.sample_tasks", "tests.process_tasks")


@pytest.fixture
async def app(make_app: AppFactory) -> App:
    return await make_app(modules=MODULES, concurrency=8)


def stamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def post_all(app: App, name: str, bodies: list[dict[str, Any]]) -> list[str]:
    return [(await app.post_task(name, params=params))["id"] for params in bodies]


async def all_done(app: App, ids: list[str], timeout: float = 30) -> list[dict[str, Any]]:
    return [await app.wait_for(task_id, timeout=timeout) for task_id in ids]


async def test_a_concurrency_limit_is_never_passed_and_is_reached(app: App, tmp_path: Path) -> None:
    path = tmp_path / "notes"
    ids = await post_all(app, "capped", [{"path": str(path), "seconds": 0.3}] * 8)
    done = await all_done(app, ids)
    assert {t["status"] for t in done} == {"completed"}
    assert most_at_once([(s, e) for s, e, _ in spans(path).values()]) == 2
    assert {t["attempts"] for t in done} == {1}  # waiting for the limit spent no attempt


async def test_a_keyed_limit_holds_per_value_and_runs_the_values_side_by_side(
    app: App, tmp_path: Path
) -> None:
    path = tmp_path / "notes"
    bodies = [{"account": a, "path": str(path), "seconds": 0.2} for a in "abc" for _ in range(3)]
    done = await all_done(app, await post_all(app, "per_account", bodies))
    assert {t["status"] for t in done} == {"completed"}
    assert most_at_once_by_key(path) == {"a": 1, "b": 1, "c": 1}
    assert most_at_once([(s, e) for s, e, _ in spans(path).values()]) == 3


async def test_a_rate_limit_allows_at_most_n_starts_in_any_window(app: App, tmp_path: Path) -> None:
    path = tmp_path / "notes"
    began = time.monotonic()
    done = await all_done(app, await post_all(app, "rated", [{"path": str(path)}] * 12))
    assert {t["status"] for t in done} == {"completed"}
    starts = sorted(stamp(t["started_at"]) for t in done)
    assert most_in_window(starts, 1.0) == 5  # "5/s": never more, and reached
    assert time.monotonic() - began >= 2.0  # 12 starts at 5 per second take two windows


async def test_a_limited_type_never_holds_other_types_up(app: App, tmp_path: Path) -> None:
    held = tmp_path / "held"
    await post_all(app, "capped", [{"path": str(held), "seconds": 5}] * 30)
    quick = tmp_path / "quick"
    ids = await post_all(app, "plain_note", [{"path": str(quick)}] * 20)
    done = await all_done(app, ids, timeout=10)
    assert {t["status"] for t in done} == {"completed"}
    # 28 capped tasks still wait behind their limit; none of the plain ones did.
    assert len(spans(quick)) == 20


async def test_a_limited_process_type_counts_its_limit_and_its_process_slots(
    make_app: AppFactory, tmp_path: Path
) -> None:
    app = await make_app(modules=MODULES, concurrency=8, processes=2)
    path = tmp_path / "notes"
    ids = await post_all(app, "capped_process", [{"path": str(path), "seconds": 0.2}] * 4)
    done = await all_done(app, ids)
    assert {t["status"] for t in done} == {"completed"}
    assert most_at_once([(s, e) for s, e, _ in spans(path).values()]) == 1


async def test_waiting_for_says_why_each_pending_task_waits(
    make_app: AppFactory, tmp_path: Path
) -> None:
    app = await make_app(modules=MODULES, concurrency=4)
    path = str(tmp_path / "notes")
    later = await app.post_task("echo", params={"text": "x"}, delay=3600)
    assert later["waiting_for"] == "run_at"
    # A failed attempt waiting out its backoff.
    flaky = await app.post_task("flaky", params={"path": path + ".count", "failures": 5})
    await eventually(lambda: _status_is(app, flaky["id"], "pending", "retry"))
    await app.client.post(f"/tasks/{flaky['id']}/cancel")
    # Two capped run (its limit); the third waits for the limit, not for a slot.
    capped = await post_all(app, "capped", [{"path": path, "seconds": 30}] * 3)
    await eventually(lambda: _status_is(app, capped[2], "pending", "concurrency"))
    await app.post_task("hang")  # the third slot
    # A rate-limited type that has used its starts for this second ("5/s"): the sixth waits.
    for _ in range(6):
        await app.post_task("rated", params={"path": path})
    await eventually(lambda: _any_waiting(app, "rated", "rate_limit"))
    # The last slot goes to a long plain task; after it, a plain task waits for a slot.
    await app.post_task("hang")
    plain = await app.post_task("echo", params={"text": "waits"})
    await eventually(lambda: _status_is(app, plain["id"], "pending", "slot"))
    # A paused type's tasks.
    await app.client.post("/task-types/plain_note/pause")
    paused = await app.post_task("plain_note", params={"path": path})
    assert (await app.task(paused["id"]))["waiting_for"] == "paused"
    # Anything not pending says nothing.
    assert (await app.task(capped[0]))["waiting_for"] is None
    metrics = (await app.client.get("/metrics")).text
    for reason in ("run_at", "concurrency", "slot", "paused"):
        assert f'tasks_waiting{{reason="{reason}"}}' in metrics


async def _status_is(app: App, task_id: str, status: str, waiting_for: str) -> bool:
    task = await app.task(task_id)
    return (task["status"], task["waiting_for"]) == (status, waiting_for)


async def _any_waiting(app: App, name: str, reason: str) -> bool:
    page = await app.client.get("/tasks", params={"name": name, "status": "pending"})
    return any(t["waiting_for"] == reason for t in page.json()["items"])


async def test_a_paused_type_starts_nothing_until_resumed(app: App, tmp_path: Path) -> None:
    response = await app.client.post("/task-types/echo/pause")
    assert response.status_code == 200
    assert (response.json()["name"], response.json()["paused"]) == ("echo", True)
    ids = [(await app.post_task("echo", params={"text": str(i)}))["id"] for i in range(5)]
    other = await app.post_task("noop")
    assert (await app.wait_for(other["id"]))["status"] == "completed"  # others go on
    await asyncio.sleep(0.5)
    assert {(await app.task(i))["status"] for i in ids} == {"pending"}
    types = {t["name"]: t for t in (await app.client.get("/task-types")).json()}
    assert types["echo"]["paused"] is True and types["noop"]["paused"] is False
    resumed = await app.client.post("/task-types/echo/resume")
    assert resumed.json()["paused"] is False
    assert {t["status"] for t in await all_done(app, ids)} == {"completed"}


async def test_pausing_an_unknown_type_is_404(app: App) -> None:
    for action in ("pause", "resume"):
        response = await app.client.post(f"/task-types/nope/{action}")
        assert response.status_code == 404
        assert "no task type 'nope'" in response.json()["detail"]


async def test_task_types_show_limits_and_how_many_run_now(app: App, tmp_path: Path) -> None:
    await post_all(app, "capped", [{"path": str(tmp_path / "n"), "seconds": 30}] * 3)

    async def two_running() -> bool:
        types = {t["name"]: t for t in (await app.client.get("/task-types")).json()}
        return types["capped"]["running"] == 2

    await eventually(two_running)
    types = {t["name"]: t for t in (await app.client.get("/task-types")).json()}
    assert (types["capped"]["concurrency"], types["capped"]["rate_limit"]) == (2, None)
    assert (types["rated"]["rate_limit"], types["rated"]["concurrency"]) == ("5/s", None)
    assert types["per_account"]["limit_key"] == "account"
    assert types["echo"]["concurrency"] is None and types["echo"]["running"] == 0
    metrics = (await app.client.get("/metrics")).text
    assert 'tasks_running{name="capped"} 2.0' in metrics
    assert 'tasks_waiting{reason="concurrency"} 1.0' in metrics
