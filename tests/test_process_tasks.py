"""process=True tasks: real worker processes, real signals, on both stores."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tasks import Context, TaskDeclarationError, TaskRegistry, task
from tests.harness import eventually
from tests.helpers import BOTH_STORES, App, AppFactory

pytestmark = [pytest.mark.anyio, BOTH_STORES]

MODULES = ("tests.process_tasks", "tests.sample_tasks")


@pytest.fixture
async def app(make_app: AppFactory) -> App:
    return await make_app(modules=MODULES, processes=2)


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


async def pid_in(path: Path) -> int:
    async def written() -> bool:
        return path.exists() and path.read_text().strip() != ""

    await eventually(written)
    return int(path.read_text().split()[-1])


async def test_a_process_task_runs_in_another_process_and_returns_its_result(app: App) -> None:
    task = await app.post_task("crunch", params={"seconds": 0.05})
    done = await app.wait_for(task["id"])
    assert done["status"] == "completed", done
    assert done["result"]["pid"] != os.getpid()
    assert done["result"]["spins"] > 0
    described = {t["name"]: t for t in (await app.client.get("/task-types")).json()}
    assert described["crunch"]["process"] is True
    assert described["echo"]["process"] is False


async def test_an_async_process_task_runs_too(app: App) -> None:
    task = await app.post_task("async_in_process", params={"text": "hi"})
    done = await app.wait_for(task["id"])
    assert done["status"] == "completed", done
    assert done["result"].startswith("hi from ")
    assert done["result"] != f"hi from {os.getpid()}"


async def test_progress_from_the_child_reaches_the_store(app: App) -> None:
    task = await app.post_task("report_steps", params={"steps": 5, "pause": 0.1})
    seen: set[float] = set()

    async def reported_midway() -> bool:
        current = await app.task(task["id"])
        if current["progress"] is not None and current["status"] == "running":
            seen.add(current["progress"])
        return len(seen) >= 2

    await eventually(reported_midway)
    done = await app.wait_for(task["id"])
    assert done["progress"] == 100.0
    assert done["message"] == "step 5 of 5"


async def test_cancel_kills_a_task_that_never_looks_and_frees_its_slot(
    app: App, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    task = await app.post_task("crunch", params={"seconds": 60, "pid_file": str(pid_file)})
    pid = await pid_in(pid_file)
    asked = time.monotonic()
    response = await app.client.post(f"/tasks/{task['id']}/cancel")
    assert response.status_code == 202
    done = await app.wait_for(task["id"], timeout=10)
    took = time.monotonic() - asked
    assert done["status"] == "cancelled"
    assert done["error"] is None
    await eventually(lambda: _gone(pid))
    # Both process slots are free again: two more process tasks run at once.
    others = [await app.post_task("crunch", params={"seconds": 0.2}) for _ in range(2)]
    for other in others:
        assert (await app.wait_for(other["id"]))["status"] == "completed"
    assert took < 30  # not the 60 s the task would have run: it was stopped, not waited for


async def _gone(pid: int) -> bool:
    return not alive(pid)


async def test_a_task_that_looks_at_cancelled_stops_and_its_process_is_reused(
    app: App, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    params = {"seconds": 60, "pid_file": str(pid_file), "cooperative": True}
    task = await app.post_task("crunch", params=params)
    pid = await pid_in(pid_file)
    await app.client.post(f"/tasks/{task['id']}/cancel")
    assert (await app.wait_for(task["id"]))["status"] == "cancelled"
    assert alive(pid)  # it stopped by itself: its worker was kept
    again = await app.post_task("crunch", params={"seconds": 0})
    assert (await app.wait_for(again["id"]))["result"]["pid"] == pid


async def test_a_timeout_kills_the_attempt_and_says_so(app: App, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    task = await app.post_task(
        "crunch_with_timeout", params={"seconds": 60, "pid_file": str(pid_file)}
    )
    pid = await pid_in(pid_file)
    done = await app.wait_for(task["id"], timeout=15)
    assert done["status"] == "failed"
    assert done["error"] == "timed out after 1 s"
    await eventually(lambda: _gone(pid))


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("sigkill", "the task's process died: its process was killed by SIGKILL (signal 9)"),
        ("exit", "the task's process died: its process exited with code 3"),
    ],
)
async def test_a_child_that_dies_fails_its_attempt_which_is_retried(
    app: App, tmp_path: Path, how: str, error: str
) -> None:
    marker = tmp_path / "died"
    task = await app.post_task("die", params={"how": how, "marker": str(marker)})

    async def retrying() -> bool:
        current = await app.task(task["id"])
        return current["error"] is not None or current["status"] == "completed"

    await eventually(retrying)
    waiting = await app.task(task["id"])
    assert waiting["error"] == error
    done = await app.wait_for(task["id"], timeout=20)
    assert done["status"] == "completed", done
    assert done["result"] == "survived attempt 2"
    assert not alive(int(marker.read_text()))
    # The service and other tasks go on.
    assert (await app.wait_for((await app.post_task("echo", params={"text": "x"}))["id"]))[
        "status"
    ] == "completed"


async def test_errors_in_the_child_fail_the_task_with_their_message(app: App) -> None:
    task = await app.post_task("fail_in_process")
    done = await app.wait_for(task["id"])
    assert (done["status"], done["error"]) == ("failed", "ValueError: bad input in the child")
    task = await app.post_task("unserialisable")
    done = await app.wait_for(task["id"])
    assert done["status"] == "failed"
    assert "not JSON-serialisable" in done["error"]


async def test_process_slots_cap_process_tasks_but_not_the_others(make_app: AppFactory) -> None:
    app = await make_app(modules=MODULES, processes=1, concurrency=4)
    crunches = [await app.post_task("crunch", params={"seconds": 0.4}) for _ in range(3)]
    echo = await app.post_task("echo", params={"text": "not held up"})
    assert (await app.wait_for(echo["id"]))["status"] == "completed"
    done = [await app.wait_for(t["id"], timeout=20) for t in crunches]
    spans = sorted((_stamp(t["started_at"]), _stamp(t["finished_at"])) for t in done)
    for (_, first_end), (second_start, _) in itertools.pairwise(spans):
        assert second_start >= first_end - 0.01  # one at a time: TASKS_PROCESSES=1
    assert (await app.wait_for(echo["id"]))["finished_at"] < done[-1]["finished_at"]


async def test_workers_are_recycled_after_max_tasks(make_app: AppFactory) -> None:
    app = await make_app(modules=MODULES, processes=1, process_max_tasks=2)
    pids = []
    for _ in range(3):
        task = await app.post_task("crunch", params={"seconds": 0})
        pids.append((await app.wait_for(task["id"]))["result"]["pid"])
    assert pids[0] == pids[1] != pids[2]


async def test_a_worker_grown_past_its_memory_limit_is_replaced(make_app: AppFactory) -> None:
    app = await make_app(modules=MODULES, processes=1, process_max_memory_mb=64)
    small = await app.post_task("grow", params={"megabytes": 1})
    first = (await app.wait_for(small["id"]))["result"]
    again = await app.post_task("grow", params={"megabytes": 1})
    assert (await app.wait_for(again["id"]))["result"] == first  # under the limit: kept
    leak = await app.post_task("grow", params={"megabytes": 100})
    assert (await app.wait_for(leak["id"]))["result"] == first
    after = await app.post_task("grow", params={"megabytes": 1})
    assert (await app.wait_for(after["id"]))["result"] != first  # past it: a fresh worker


def _stamp(value: Any) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()


def test_a_process_task_a_child_cannot_import_is_refused() -> None:
    def build() -> Any:
        @task(process=True)
        def nested(ctx: Context) -> None: ...

        return nested

    with pytest.raises(TaskDeclarationError, match=r"@task 'nested': process=True .* import"):
        TaskRegistry([build()])


def test_a_process_task_defined_in_main_is_refused() -> None:
    def render(ctx: Context) -> None: ...

    render.__module__ = "__main__"
    with pytest.raises(TaskDeclarationError, match="defined in __main__"):
        TaskRegistry([task(process=True)(render)])
