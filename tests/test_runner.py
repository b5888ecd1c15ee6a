"""How attempts run: retries, timeouts, failures, cancellation, concurrency, order."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
import weakref
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tasks_service import create_app
from tasks_service.config import Settings
from tasks_service.models import StoreUnavailable
from tasks_service.runtime.attempts import retry_delay
from tests import sample_tasks
from tests.harness import eventually
from tests.helpers import BOTH_STORES, App, AppFactory

pytestmark = [pytest.mark.anyio, BOTH_STORES]


def stamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def test_failures_are_retried_with_backoff_until_success(app: App, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    task = await app.post_task("flaky", params={"path": str(counter), "failures": 2})
    assert task["max_attempts"] == 3  # from @task(max_attempts=3)
    waiting = await retrying(app, task["id"])
    # Between attempts it is pending, shows the last error, and waits about a second.
    assert waiting["error"] == "RuntimeError: failure number 1"
    first_wait = stamp(waiting["run_at"]) - stamp(waiting["started_at"])
    assert 0.7 <= first_wait <= 1.3
    done = await app.wait_for(task["id"], timeout=15)
    assert done["status"] == "completed"
    assert done["attempts"] == 3
    assert done["result"] == 3  # ctx.attempt on the third start
    assert done["error"] is None
    assert counter.read_text() == "3"


async def retrying(app: App, task_id: str) -> dict[str, object]:
    """The task as it waits for a retry: pending, with an error."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        task = await app.task(task_id)
        if task["status"] == "pending" and task["error"]:
            return task
        await asyncio.sleep(0.01)
    raise AssertionError("the task never waited for a retry")


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    for failed, base in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (30, 300.0)]:
        delays = [retry_delay(failed) for _ in range(200)]
        assert all(0.75 * base <= d <= 1.25 * base for d in delays)
        assert len(set(delays)) > 100  # jittered, so retries of many tasks spread out


async def test_retries_run_out_and_the_task_fails(app: App, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    task = await app.post_task(
        "flaky", params={"path": str(counter), "failures": 10}, max_attempts=2
    )
    done = await app.wait_for(task["id"], timeout=15)
    assert done["status"] == "failed"
    assert done["attempts"] == 2
    assert done["error"] == "RuntimeError: failure number 2"
    assert counter.read_text() == "2"


async def test_an_exception_fails_the_task_with_its_message(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="tasks"):
        task = await app.post_task("boom", params={"message": "disk on fire"})
        done = await app.wait_for(task["id"])
    assert done["status"] == "failed"
    assert done["error"] == "ValueError: disk on fire"
    assert done["attempts"] == 1 and done["max_attempts"] == 1
    assert done["finished_at"] is not None
    # The full traceback is logged, with the task's id and name.
    record = next(r for r in caplog.records if task["id"] in r.getMessage())
    assert "boom" in record.getMessage()
    assert record.exc_info is not None
    assert "disk on fire" in caplog.text and "Traceback" in caplog.text


async def test_permanent_error_is_not_retried(app: App) -> None:
    task = await app.post_task("fatal")
    done = await app.wait_for(task["id"])
    assert done["status"] == "failed"
    assert done["attempts"] == 1 and done["max_attempts"] == 5
    assert "no point retrying" in done["error"]


async def test_a_result_that_is_not_json_fails_saying_so(app: App) -> None:
    task = await app.post_task("not_json", max_attempts=3)
    done = await app.wait_for(task["id"])
    assert done["status"] == "failed"
    assert "not JSON-serialisable" in done["error"]
    assert done["attempts"] == 1  # retrying would return the same thing


async def test_async_timeout_fails_the_attempt(app: App) -> None:
    task = await app.post_task("too_slow")
    done = await app.wait_for(task["id"], timeout=10)
    assert done["status"] == "failed"
    assert done["error"] == "timed out after 0.2 s"


async def test_timeout_is_a_failure_like_any_other_and_retried(app: App) -> None:
    task = await app.post_task("hang", timeout=0.1, max_attempts=2)
    done = await app.wait_for(task["id"], timeout=10)
    assert done["status"] == "failed"
    assert done["attempts"] == 2
    assert done["error"] == "timed out after 0.1 s"


async def test_sync_timeout_fails_at_once_and_holds_the_slot_until_the_thread_ends(
    make_app: AppFactory,
) -> None:
    app = await make_app(concurrency=1)
    slow = await app.post_task(
        "sync_wait", params={"seconds": 1.5, "cooperative": False}, timeout=0.2
    )
    queued = await app.post_task("noop")
    done = await app.wait_for(slow["id"], timeout=5)
    assert done["status"] == "failed" and done["error"] == "timed out after 0.2 s"
    # The thread still runs, so its slot is still taken: the next task has not started.
    assert (await app.task(queued["id"]))["status"] == "pending"
    after = await app.wait_for(queued["id"], timeout=10)
    assert after["status"] == "completed"
    assert stamp(after["started_at"]) >= stamp(done["started_at"]) + 1.4
    assert (await app.task(slow["id"]))["status"] == "failed"  # its late result discarded


async def test_cancel_running_sync_task_that_checks_ctx_cancelled(app: App) -> None:
    task = await app.post_task("sync_wait", params={"seconds": 60})
    await app.wait_for(task["id"], "running")
    response = await app.client.post(f"/tasks/{task['id']}/cancel")
    assert response.status_code == 202
    done = await app.wait_for(task["id"], timeout=5)
    assert done["status"] == "cancelled"
    assert done["result"] is None  # what it returned after noticing is not kept


async def test_cancel_running_sync_task_that_ignores_it_ends_cancelled_when_it_returns(
    app: App,
) -> None:
    task = await app.post_task("sync_wait", params={"seconds": 0.5, "cooperative": False})
    await app.wait_for(task["id"], "running")
    assert (await app.client.post(f"/tasks/{task['id']}/cancel")).status_code == 202
    done = await app.wait_for(task["id"], timeout=5)
    assert done["status"] == "cancelled"


async def test_cancelled_task_is_never_retried(app: App) -> None:
    task = await app.post_task("hang", max_attempts=5)
    await app.wait_for(task["id"], "running")
    await app.client.post(f"/tasks/{task['id']}/cancel")
    done = await app.wait_for(task["id"])
    assert done["status"] == "cancelled"
    await asyncio.sleep(1.5)  # a retry would have started by now
    again = await app.task(task["id"])
    assert again["status"] == "cancelled" and again["attempts"] == 1


async def test_sync_task_progress_is_stored(app: App) -> None:
    task = await app.post_task("sync_progress", params={"steps": 5})
    done = await app.wait_for(task["id"])
    assert done["status"] == "completed"
    assert done["progress"] == 100.0 and done["message"] == "5/5"


async def test_sleep_reports_progress_while_running(app: App) -> None:
    task = await app.post_task("sleep", params={"seconds": 1.0, "steps": 5})
    seen: set[float] = set()
    while (current := await app.task(task["id"]))["status"] != "completed":
        if current["progress"] is not None:
            seen.add(current["progress"])
        await asyncio.sleep(0.05)
    assert current["result"] == {"slept": 1.0}
    assert current["progress"] == 100.0 and current["message"] == "step 5 of 5"
    assert seen & {20.0, 40.0, 60.0, 80.0}  # seen part-way, not only at the end


@pytest.mark.parametrize("kind", ["probe", "sync_probe"])
async def test_concurrency_limit_is_never_exceeded(make_app: AppFactory, kind: str) -> None:
    app = await make_app(concurrency=3)
    sample_tasks._running_most = 0
    tasks = [await app.post_task(kind, params={"seconds": 0.1}) for _ in range(15)]
    for task in tasks:
        assert (await app.wait_for(task["id"]))["status"] == "completed"
    assert sample_tasks.running_most() == 3


async def test_higher_priority_runs_first_then_oldest(make_app: AppFactory, tmp_path: Path) -> None:
    app = await make_app(concurrency=1)
    log_file = tmp_path / "order"
    blocker = await app.post_task("hang", params={"seconds": 0.5})
    await app.wait_for(blocker["id"], "running")
    for mark, priority in [("low-1", 0), ("high-1", 5), ("low-2", 0), ("top", 9), ("high-2", 5)]:
        await app.post_task(
            "record", params={"path": str(log_file), "mark": mark}, priority=priority
        )
    await eventually(lambda: _lines_at_least(log_file, 5))
    assert log_file.read_text().split() == ["top", "high-1", "high-2", "low-1", "low-2"]


async def _lines_at_least(path: Path, count: int) -> bool:
    return path.exists() and len(path.read_text().split()) >= count


async def test_delayed_task_starts_at_its_time_not_before(app: App) -> None:
    task = await app.post_task("noop", delay=0.6)
    assert (await app.task(task["id"]))["status"] == "pending"
    done = await app.wait_for(task["id"], timeout=10)
    assert done["status"] == "completed"
    assert stamp(done["started_at"]) >= stamp(done["run_at"])
    assert stamp(done["run_at"]) - stamp(done["created_at"]) == pytest.approx(0.6, abs=0.01)


async def test_python_api_enqueue_get_list_cancel(app: App) -> None:
    service = app.service
    task = await service.enqueue("echo", text="from python")
    assert task.status.value in ("pending", "running")
    await eventually(lambda: _status_is(app, task.id, "completed"))
    fetched = await service.get(task.id)
    assert fetched.result == {"text": "from python", "extra": None}
    later = await service.enqueue(sample_tasks.hang, seconds=60)  # a definition works too
    await eventually(lambda: _status_is(app, later.id, "running"))
    stopped, at_once = await service.cancel(later.id)
    assert not at_once and stopped.cancel_requested
    await eventually(lambda: _status_is(app, later.id, "cancelled"))
    page = await service.list(limit=10)
    assert [t.id for t in page.items] == [later.id, task.id]


async def _status_is(app: App, task_id: str, status: str) -> bool:
    return (await app.service.get(task_id)).status.value == status


async def test_many_tasks_at_once_each_run_exactly_once(
    make_app: AppFactory, tmp_path: Path
) -> None:
    app = await make_app(concurrency=16)
    marks = tmp_path / "marks"
    results = await asyncio.gather(
        *(
            app.service.enqueue("record_sync" if i % 2 else "record", path=str(marks), mark=str(i))
            for i in range(400)
        )
    )
    assert len({t.id for t in results}) == 400
    await eventually(lambda: _lines_at_least(marks, 400), timeout=60)
    await eventually(lambda: _all_completed(app, 400), timeout=30)
    assert sorted(marks.read_text().split(), key=int) == [str(i) for i in range(400)]


async def _all_completed(app: App, count: int) -> bool:
    page = await app.service.list(limit=500)
    return len(page.items) == count and all(t.status.value == "completed" for t in page.items)


async def test_no_state_is_kept_for_a_finished_task(app: App) -> None:
    tasks = [await app.service.enqueue("noop") for _ in range(50)]
    await eventually(lambda: _all_completed(app, 50))
    runner = app.service.runner
    await eventually(lambda: _idle(runner))
    assert runner._attempts == {}
    assert tasks


async def _idle(runner: object) -> bool:
    return getattr(runner, "_busy") == 0  # noqa: B009


async def test_no_thread_is_left_behind(app: App) -> None:
    before = threading.active_count()
    task = await app.post_task("sync_wait", params={"seconds": 0.05})
    await app.wait_for(task["id"])
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert threading.active_count() <= before


async def test_a_claim_in_flight_when_stopping_gives_its_tasks_back_unstarted(
    make_app: AppFactory, tmp_path: Path
) -> None:
    """Shutdown starts no task: one claimed while it began is handed back, not stranded."""
    app = await make_app()
    runner, store = app.service.runner, app.service.store
    gate = asyncio.Event()
    claiming = asyncio.Event()
    real_claim = store.claim

    async def held_claim(owner: str, limit: int, *lanes: Any) -> list[object]:
        claimed = await real_claim(owner, limit, *lanes)  # committed: the rows say running
        if claimed:
            claiming.set()
            await gate.wait()  # ... but the dispatcher has not started them yet
        return claimed

    store.claim = held_claim  # type: ignore[method-assign]
    marks = tmp_path / "marks"
    task = await app.post_task("record", params={"path": str(marks), "mark": "x"}, delay=0.1)
    await asyncio.wait_for(claiming.wait(), 10)
    stopping = asyncio.create_task(runner.stop())
    await asyncio.sleep(0.05)
    gate.set()
    await stopping
    stored = await store.get(task["id"])
    assert stored is not None
    assert stored.status.value == "pending" and stored.attempts == 0
    assert not marks.exists()


async def test_a_claim_that_committed_but_reported_failure_is_given_back_and_run(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection can drop after COMMIT reached the database: the claim is stored, but
    the runner hears an error. Those tasks must not stay `running` for a live owner."""
    store = app.service.store
    real_claim = store.claim
    failures: list[list[str]] = []

    async def claim_then_lose_the_answer(owner: str, limit: int, *lanes: Any) -> list[Any]:
        claimed = await real_claim(owner, limit, *lanes)
        if claimed and not failures:
            failures.append([t.id for t in claimed])
            raise StoreUnavailable("the task database cannot be reached: connection lost")
        return claimed

    monkeypatch.setattr(store, "claim", claim_then_lose_the_answer)
    task = await app.post_task("noop", delay=0.3)  # pending first: the dispatcher claims it
    done = await app.wait_for(task["id"], timeout=20)
    assert failures == [[task["id"]]]  # the answer of its first claim was lost
    assert done["status"] == "completed"
    assert done["attempts"] == 1  # given back unstarted: the lost claim is not counted


async def test_an_app_stopped_in_a_process_that_goes_on_is_freed(settings: Settings) -> None:
    """While the service runs, what existed at startup is left out of the garbage
    collector's passes; once it stops, an app dropped by a process that goes on (a test
    suite, an embedder) is freed like any other object, not kept for the process's life."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        await application.state.service.enqueue("echo", text="hello")
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    stopped = weakref.ref(application)
    del application
    gc.collect()
    assert stopped() is None
