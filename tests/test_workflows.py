"""Tasks that start tasks: results, failures, durability across retries, cancel cascades,
no slot held while waiting, visibility (both stores, in-process)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.harness import eventually
from tests.helpers import BOTH_STORES, App, AppFactory

pytestmark = [pytest.mark.anyio, BOTH_STORES]

MODULES = ("tests.workflow_tasks", "tests.sample_tasks", "tests.process_tasks")


@pytest.fixture
async def app(make_app: AppFactory) -> App:
    return await make_app(modules=MODULES)


async def children(app: App, parent_id: str) -> list[dict[str, Any]]:
    response = await app.client.get("/tasks", params={"parent_id": parent_id, "limit": 500})
    assert response.status_code == 200, response.text
    return list(reversed(response.json()["items"]))  # oldest first: the order of the calls


def runs(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


async def test_map_returns_the_childrens_results_in_order_and_lists_them(app: App) -> None:
    parent = await app.post_task("fan_out", params={"n": 6})
    done = await app.wait_for(parent["id"])
    assert (done["status"], done["result"]) == ("completed", 30)
    assert done["parent_id"] is None
    kids = await children(app, parent["id"])
    assert [k["params"]["n"] for k in kids] == list(range(6))
    assert {k["parent_id"] for k in kids} == {parent["id"]}
    assert {k["status"] for k in kids} == {"completed"}


async def test_a_plain_def_task_makes_plain_calls(app: App) -> None:
    done = await app.wait_for((await app.post_task("sync_chain", params={"n": 5}))["id"])
    assert (done["status"], done["result"]) == ("completed", 20)


@pytest.mark.parametrize("parent", ["fan_out", "sync_chain", "tree"])
async def test_a_waiting_parent_holds_no_slot_at_concurrency_one(
    make_app: AppFactory, parent: str
) -> None:
    app = await make_app(modules=MODULES, concurrency=1)
    params = {"fan_out": {"n": 4}, "sync_chain": {"n": 2}, "tree": {"depth": 2}}[parent]
    done = await app.wait_for((await app.post_task(parent, params=params))["id"], timeout=30)
    assert done["status"] == "completed", done
    assert done["result"] == {"fan_out": 12, "sync_chain": 8, "tree": 7}[parent]


async def test_a_failed_child_raises_child_failed_naming_it(app: App) -> None:
    done = await app.wait_for((await app.post_task("catches_a_failure"))["id"])
    assert done["result"]["status"] == "failed"
    assert done["result"]["error"] == "ValueError: child broke"
    assert "(boom) ended failed: ValueError: child broke" in done["result"]["text"]
    uncaught = await app.wait_for((await app.post_task("lets_a_failure_through"))["id"])
    assert uncaught["status"] == "failed"
    assert uncaught["error"].startswith("ChildFailed: child task ")


async def test_an_unknown_child_type_or_bad_params_fail_the_parent_and_store_no_child(
    app: App,
) -> None:
    unknown = await app.wait_for((await app.post_task("runs_unknown"))["id"])
    assert unknown["status"] == "failed"
    assert "unknown task type 'no_such_type'" in unknown["error"]
    bad = await app.wait_for((await app.post_task("runs_bad_params"))["id"])
    assert bad["status"] == "failed"
    assert "InvalidParams" in bad["error"] and "double" in bad["error"]
    for parent in (unknown, bad):
        assert await children(app, parent["id"]) == []


async def test_start_does_not_wait_and_the_child_runs_on(app: App, tmp_path: Path) -> None:
    path = tmp_path / "runs"
    parent = await app.wait_for(
        (await app.post_task("starts_and_returns", params={"path": str(path)}))["id"]
    )
    child_id = parent["result"]
    child = await app.wait_for(child_id)
    assert (child["status"], child["parent_id"]) == ("completed", parent["id"])
    assert runs(path) == ["started"]


async def test_a_retried_parent_gets_its_completed_child_back_without_running_it(
    app: App, tmp_path: Path
) -> None:
    path = tmp_path / "runs"
    parent = await app.post_task("retried_parent", params={"path": str(path)})
    done = await app.wait_for(parent["id"], timeout=20)
    assert (done["status"], done["attempts"]) == ("completed", 2)
    assert done["result"] == ["first", "second"]
    assert runs(path) == ["first", "second"]  # the first child ran once, not twice
    assert len(await children(app, parent["id"])) == 2


async def test_a_rerun_that_makes_another_call_fails_saying_the_workflow_changed(
    app: App,
) -> None:
    done = await app.wait_for((await app.post_task("changes_its_calls"))["id"], timeout=20)
    assert done["status"] == "failed"
    assert done["error"].startswith("WorkflowChanged: call 1 of task")
    assert "same calls in the same order" in done["error"]


async def test_calls_named_by_key_may_come_in_another_order(app: App, tmp_path: Path) -> None:
    path = tmp_path / "runs"
    parent = await app.post_task("keyed_calls", params={"path": str(path)})
    done = await app.wait_for(parent["id"], timeout=20)
    assert (done["status"], done["result"]) == ("completed", ["y", "x"])
    assert runs(path) == ["x", "y"]  # each child ran once


async def test_cancelling_a_parent_cancels_its_unfinished_children(app: App) -> None:
    parent = await app.post_task("waits_on_a_hang")

    async def child_running() -> bool:
        kids = await children(app, parent["id"])
        return bool(kids) and kids[0]["status"] == "running"

    await eventually(child_running)
    response = await app.client.post(f"/tasks/{parent['id']}/cancel")
    assert response.status_code == 202
    assert (await app.wait_for(parent["id"]))["status"] == "cancelled"
    (child,) = await children(app, parent["id"])
    assert (await app.wait_for(child["id"]))["status"] == "cancelled"


async def test_cancelling_a_child_raises_child_failed_in_its_parent(app: App) -> None:
    parent = await app.post_task("waits_on_a_hang")

    async def child_running() -> bool:
        kids = await children(app, parent["id"])
        return bool(kids) and kids[0]["status"] == "running"

    await eventually(child_running)
    (child,) = await children(app, parent["id"])
    await app.client.post(f"/tasks/{child['id']}/cancel")
    done = await app.wait_for(parent["id"])
    assert done["status"] == "failed"
    assert "(hang) ended cancelled" in done["error"]


async def test_children_inherit_their_parents_priority(app: App) -> None:
    parent = await app.post_task("fan_out", params={"n": 2}, priority=7)
    await app.wait_for(parent["id"])
    assert {k["priority"] for k in await children(app, parent["id"])} == {7}


async def test_purge_keeps_the_children_of_an_unfinished_parent(app: App, tmp_path: Path) -> None:
    parent = await app.post_task("retried_parent", params={"path": str(tmp_path / "r")})

    async def first_child_done() -> bool:
        kids = await children(app, parent["id"])
        return bool(kids) and kids[0]["status"] == "completed"

    await eventually(first_child_done)
    await app.service.store.purge(time.time() + 60)  # everything finished is old enough
    if (await app.task(parent["id"]))["status"] in ("pending", "running"):
        assert len(await children(app, parent["id"])) >= 1
    done = await app.wait_for(parent["id"], timeout=20)
    assert done["result"] == ["first", "second"]


async def test_a_process_task_is_told_it_cannot_start_children(app: App) -> None:
    done = await app.wait_for((await app.post_task("process_parent"))["id"])
    assert done["status"] == "failed"
    assert "cannot start child tasks" in done["error"]


async def test_a_parents_event_stream_tells_of_its_children(app: App) -> None:
    parent = await app.post_task("fan_out", params={"n": 3}, delay=0.5)
    seen: list[tuple[str, str]] = []
    async with app.client.stream("GET", f"/tasks/{parent['id']}/events") as stream:
        event = ""
        async for line in stream.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                seen.append((event, line))
    kinds = {kind for kind, _ in seen}
    assert kinds == {"task", "child"}
    assert sum(1 for kind, line in seen if kind == "child" and '"completed"' in line) == 3
