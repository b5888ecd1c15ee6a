"""The store's verbs against real databases (no mocks): each runs on a SQLite file and on
PostgreSQL; the few about one engine's own machinery say so in their names."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import sqlite3
import string
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from store import Store, StoreOpenError
from tasks_service.claims import ClaimPlan
from tasks_service.counted import NO_DURATION
from tasks_service.engines import is_postgres_url
from tasks_service.engines import sqlite as sqlite_engine
from tasks_service.engines.postgres import PostgresStore
from tasks_service.engines.sqlite import SqliteStore
from tasks_service.engines.sqlite_writer import ProcessWriteLock
from tasks_service.models import (
    IdempotencyConflict,
    NewTask,
    Outcome,
    StoreUnavailable,
    Task,
    TaskStatus,
    WorkerInfo,
)

pytestmark = pytest.mark.anyio


def new(**fields: Any) -> NewTask:
    return NewTask(**{"name": "noop", "params": {}, **fields})


def pragma(path: Path, name: str) -> Any:
    """One PRAGMA read through the stdlib module, as an outside observer would."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives: a fresh SQLite file, or a fresh PostgreSQL database."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_url")
        return url
    return str(tmp_path / "t.db")


@contextlib.asynccontextmanager
async def opened(location: str | Path) -> AsyncIterator[Store]:
    """An open store at `location`, always closed (another process, as far as it knows)."""
    db = store_at(str(location))
    await db.open()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "t.db"


@pytest.fixture
async def store(location: str) -> AsyncIterator[Store]:
    async with opened(location) as db:
        yield db


async def changed_soon(store: Store) -> bool:
    """Whether `store` hears of a change within a few seconds (NOTIFY arrives after commit)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if await store.changed():
            return True
        await store.wait_for_change(0.05)
    return False


async def fetch(store: Store, task_id: str) -> Task:
    task = await store.get(task_id)
    assert task is not None, f"task {task_id} is gone"
    return task


async def all_tasks(store: Store) -> list[Task]:
    return await store.list(statuses=[], name=None, before_id=None, limit=100_000)


# -- opening ---------------------------------------------------------------------------------


async def test_a_fresh_file_gets_the_latest_schema_version_in_wal_mode(db_path: Path) -> None:
    async with opened(db_path) as store:
        # Version 1 when the store shipped; every migration added since moves it one on.
        assert len(sqlite_engine.MIGRATIONS) >= 1
        assert pragma(db_path, "user_version") == len(sqlite_engine.MIGRATIONS)
        with contextlib.closing(sqlite3.connect(db_path)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert {"tasks", "workers", "tasks_due", "tasks_unique_key"} <= tables
        assert pragma(db_path, "journal_mode") == "wal"
        await store.ping()


async def test_reopening_an_existing_file_keeps_its_rows(db_path: Path) -> None:
    async with opened(db_path) as first:
        task, created = await first.create(new(priority=3))
        assert created
    async with opened(db_path) as second:
        again = await fetch(second, task.id)
        assert again.status is TaskStatus.PENDING
        assert again.priority == 3
        assert again.created_at == task.created_at
        assert len(await all_tasks(second)) == 1
    assert pragma(db_path, "user_version") == len(sqlite_engine.MIGRATIONS)


async def test_a_newer_schema_refuses_to_open_and_says_to_upgrade(db_path: Path) -> None:
    newer = len(sqlite_engine.MIGRATIONS) + 1
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.execute(f"PRAGMA user_version = {newer}")
        conn.commit()
    db = SqliteStore(str(db_path))
    try:
        with pytest.raises(StoreOpenError, match="upgrade"):
            await db.open()
    finally:
        await db.close()
    # Nothing was migrated "down" or created in the newer database.
    assert pragma(db_path, "user_version") == newer
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    assert tables == []


@pytest.mark.parametrize("size", [40, 20_000])
async def test_a_file_that_is_not_sqlite_is_refused_and_left_untouched(
    db_path: Path, size: int
) -> None:
    rng = random.Random(size)
    text = "".join(rng.choice(string.ascii_letters + " \n") for _ in range(size))
    db_path.write_text(text)
    before = db_path.read_bytes()
    db = SqliteStore(str(db_path))
    try:
        with pytest.raises(StoreOpenError, match="cannot use"):
            await db.open()
    finally:
        await db.close()
    assert db_path.read_bytes() == before  # no silent new, empty database in its place


# -- create ----------------------------------------------------------------------------------


async def test_a_thousand_concurrent_creates_all_land_with_ids_in_creation_order(
    store: Store,
) -> None:
    results = await asyncio.gather(*(store.create(new()) for _ in range(1000)))
    assert all(created for _, created in results)
    ids = [task.id for task, _ in results]
    assert len(set(ids)) == 1000
    stored = await all_tasks(store)
    assert {task.id for task in stored} == set(ids)
    assert all(task.status is TaskStatus.PENDING and task.attempts == 0 for task in stored)
    by_id = sorted(stored, key=lambda t: t.id)
    by_time = sorted(stored, key=lambda t: t.created_at)
    assert [t.id for t in by_id] == [t.id for t in by_time]
    assert len({t.created_at for t in stored}) == 1000  # no two share a creation time
    # gather starts them in order, and ids follow that order.
    assert ids == sorted(ids)


async def test_create_stores_every_field_and_a_default_run_at_of_now(store: Store) -> None:
    later = time.time() + 3600
    task, created = await store.create(
        NewTask(
            name="echo",
            params={"text": "hé", "extra": {"n": [1, 2]}},
            priority=-2,
            run_at=later,
            max_attempts=4,
            timeout=2.5,
            schedule_id="nightly",
        )
    )
    assert created
    stored = await fetch(store, task.id)
    assert stored == task
    assert stored.params == {"text": "hé", "extra": {"n": [1, 2]}}
    assert (stored.priority, stored.max_attempts, stored.timeout) == (-2, 4, 2.5)
    assert stored.run_at == later
    assert stored.schedule_id == "nightly"
    now_task, _ = await store.create(new())
    assert now_task.run_at == now_task.created_at


async def test_create_with_claim_for_inserts_it_running_for_that_owner(store: Store) -> None:
    task, _ = await store.create(new(), claim_for="w1")
    stored = await fetch(store, task.id)
    assert stored.status is TaskStatus.RUNNING
    assert stored.owner == "w1"
    assert stored.attempts == 1
    assert stored.started_at is not None
    assert await store.claim("w2", 10) == []  # not claimable by anyone else


async def test_the_same_unique_key_and_request_gives_back_the_first_task(
    store: Store,
) -> None:
    first, created = await store.create(new(unique_key="k1", request_hash="h1"))
    assert created
    again, created_again = await store.create(new(unique_key="k1", request_hash="h1"))
    assert not created_again
    assert again.id == first.id
    assert again.created_at == first.created_at
    assert len(await all_tasks(store)) == 1


async def test_the_same_unique_key_with_another_request_is_a_conflict(store: Store) -> None:
    first, _ = await store.create(new(unique_key="k1", request_hash="h1"))
    with pytest.raises(IdempotencyConflict, match=first.id):
        await store.create(new(unique_key="k1", request_hash="h2"))
    assert [t.id for t in await all_tasks(store)] == [first.id]
    # Another key is another task.
    other, created = await store.create(new(unique_key="k2", request_hash="h2"))
    assert created and other.id != first.id


async def test_concurrent_creates_with_one_key_make_exactly_one_row(store: Store) -> None:
    results = await asyncio.gather(
        *(store.create(new(unique_key="once", request_hash="same")) for _ in range(50))
    )
    assert sum(created for _, created in results) == 1
    assert len({task.id for task, _ in results}) == 1
    assert len(await all_tasks(store)) == 1


async def test_concurrent_creates_with_one_key_and_different_requests_keep_one(
    store: Store,
) -> None:
    results = await asyncio.gather(
        *(store.create(new(unique_key="once", request_hash=f"h{i}")) for i in range(20)),
        return_exceptions=True,
    )
    made = [r for r in results if isinstance(r, tuple)]
    conflicts = [r for r in results if isinstance(r, IdempotencyConflict)]
    assert len(made) == 1 and made[0][1] is True
    assert len(conflicts) == 19
    assert len(await all_tasks(store)) == 1


async def test_a_deleted_key_holder_frees_the_key(store: Store) -> None:
    first, _ = await store.create(new(unique_key="k", request_hash="h"))
    await store.cancel_pending(first.id)
    assert await store.purge(time.time() + 1) == 1
    second, created = await store.create(new(unique_key="k", request_hash="other"))
    assert created
    assert second.id != first.id


# -- claim -----------------------------------------------------------------------------------


async def make_ordered(store: Store) -> tuple[dict[str, str], Task]:
    """Due tasks of mixed priority and run_at, plus one in the future."""
    now = time.time()
    ids: dict[str, str] = {}
    for label, priority, age in [
        ("low_old", 0, 10),
        ("high_recent", 5, 1),
        ("high_older", 5, 5),
        ("low_old_twin", 0, 10),  # same priority and run_at as low_old, created later
        ("negative", -1, 100),
    ]:
        task, _ = await store.create(new(priority=priority, run_at=now - age))
        ids[label] = task.id
    future, _ = await store.create(new(priority=100, run_at=now + 3600))
    return ids, future


EXPECTED_ORDER = ["high_older", "high_recent", "low_old", "low_old_twin", "negative"]


async def test_claim_returns_priority_then_run_at_then_age(store: Store) -> None:
    ids, future = await make_ordered(store)
    claimed = await store.claim("w1", 100)
    assert [t.id for t in claimed] == [ids[label] for label in EXPECTED_ORDER]
    assert future.id not in {t.id for t in claimed}
    for task in claimed:
        assert task.status is TaskStatus.RUNNING
        assert task.owner == "w1"
        assert task.attempts == 1
        assert task.started_at is not None
        assert await fetch(store, task.id) == task


async def test_claim_one_at_a_time_takes_the_best_first(store: Store) -> None:
    ids, future = await make_ordered(store)
    order = []
    while claimed := await store.claim("w1", 1):
        assert len(claimed) == 1
        order.append(claimed[0].id)
    assert order == [ids[label] for label in EXPECTED_ORDER]
    assert (await fetch(store, future.id)).status is TaskStatus.PENDING


async def test_claim_takes_tasks_of_lanes_only_from_the_groups_given_within_their_caps(
    store: Store,
) -> None:
    now = time.time()
    plain = [(await store.create(new(run_at=now - i)))[0].id for i in range(3)]
    crunch = [
        (await store.create(new(name="crunch", lane="crunch", priority=5, run_at=now - i)))[0].id
        for i in range(3)
    ]
    resize = (await store.create(new(name="resize", lane="resize", priority=9)))[0].id
    # Without its lane's group, a lane's task is never claimed, however high its priority.
    assert {t.id for t in await store.claim("w1", 1)} == {plain[2]}
    claimed = await store.claim("w1", plan(10, process=(["crunch", "resize"], 2)))
    # The best two of the group (by priority, then age), and the plain task beside them.
    assert [t.id for t in claimed] == [resize, crunch[2], plain[1], plain[0]]
    assert [t.id for t in await store.claim("w1", plan(1, process=(["crunch"], 5)))] == [crunch[1]]
    assert [t.id for t in await store.claim("w1", plan(5, process=(["crunch"], 0)))] == []
    await store.move_lanes([(None, crunch[0])])  # no longer a process type: plain again
    assert [t.id for t in await store.claim("w1", 5)] == [crunch[0]]


def plan(limit: int, *, process: tuple[list[str], int]) -> ClaimPlan:
    names, cap = process
    return ClaimPlan(limit, process_limit=cap, process_lanes=tuple(names))


async def test_claim_never_returns_a_task_whose_run_at_is_in_the_future(
    store: Store,
) -> None:
    later = time.time() + 3600
    task, _ = await store.create(new(priority=10, run_at=later))
    assert await store.claim("w1", 10) == []
    assert not await store.has_due()
    assert await store.next_run_at() == later
    stored = await fetch(store, task.id)
    assert stored.status is TaskStatus.PENDING and stored.attempts == 0
    due, _ = await store.create(new(run_at=time.time() - 1))
    assert await store.has_due()
    assert [t.id for t in await store.claim("w1", 10)] == [due.id]


async def test_two_stores_on_one_database_never_claim_the_same_task(location: str) -> None:
    async with opened(location) as one, opened(location) as two:
        await asyncio.gather(*(one.create(new()) for _ in range(300)))

        async def drain(db: Store, owner: str) -> list[str]:
            got: list[str] = []
            idle = 0
            while idle < 3:
                claimed = await db.claim(owner, 7)
                got.extend(t.id for t in claimed)
                idle = 0 if claimed else idle + 1
                await asyncio.sleep(0)
            return got

        got_one, got_two = await asyncio.gather(drain(one, "p1"), drain(two, "p2"))
        assert len(got_one) == len(set(got_one))
        assert len(got_two) == len(set(got_two))
        assert not set(got_one) & set(got_two)
        assert len(got_one) + len(got_two) == 300
        stored = await all_tasks(one)
        assert {t.id for t in stored} == set(got_one) | set(got_two)
        for task in stored:
            assert task.status is TaskStatus.RUNNING
            assert task.attempts == 1  # a second claim would have made it 2
            assert task.owner == ("p1" if task.id in got_one else "p2")


# -- finish ----------------------------------------------------------------------------------


async def test_finish_by_another_owner_changes_nothing(store: Store) -> None:
    task, _ = await store.create(new(), claim_for="w1")
    intruder = dataclasses.replace(task, owner="w2")
    await store.finish(intruder, Outcome(TaskStatus.COMPLETED, result_json='"stolen"'))
    stored = await fetch(store, task.id)
    assert stored.status is TaskStatus.RUNNING
    assert stored.result is None
    assert stored.finished_at is None


async def test_finish_by_the_owner_stores_the_outcome(store: Store) -> None:
    done, _ = await store.create(new(), claim_for="w1")
    broken, _ = await store.create(new(), claim_for="w1")
    await store.finish(done, Outcome(TaskStatus.COMPLETED, result_json='{"rows": 3}'))
    await store.finish(broken, Outcome(TaskStatus.FAILED, error="ValueError: bad"))
    stored = await fetch(store, done.id)
    assert stored.status is TaskStatus.COMPLETED
    assert stored.result == {"rows": 3}
    assert stored.error is None
    assert stored.finished_at is not None and stored.finished_at >= stored.started_at
    failed = await fetch(store, broken.id)
    assert failed.status is TaskStatus.FAILED
    assert failed.error == "ValueError: bad"
    assert failed.result is None
    # A terminal task never changes again, even for its owner.
    await store.finish(done, Outcome(TaskStatus.FAILED, error="late"))
    assert await fetch(store, done.id) == stored


async def test_a_pending_outcome_waits_for_its_retry_keeping_the_error(
    store: Store,
) -> None:
    task, _ = await store.create(new(max_attempts=3), claim_for="w1")
    retry_at = time.time() + 3600
    await store.finish(task, Outcome(TaskStatus.PENDING, error="boom", retry_at=retry_at))
    stored = await fetch(store, task.id)
    assert stored.status is TaskStatus.PENDING
    assert stored.run_at == retry_at
    assert stored.error == "boom"
    assert stored.finished_at is None
    assert await store.claim("w1", 10) == []  # not before retry_at


async def test_a_retry_that_is_due_is_claimed_again(store: Store) -> None:
    task, _ = await store.create(new(max_attempts=3), claim_for="w1")
    retry_at = time.time() - 0.001
    await store.finish(task, Outcome(TaskStatus.PENDING, error="boom", retry_at=retry_at))
    [again] = await store.claim("w2", 10)
    assert again.id == task.id
    assert again.attempts == 2
    assert again.owner == "w2"
    assert again.error == "boom"


# -- cancel ----------------------------------------------------------------------------------


async def test_cancel_pending_works_only_on_pending_tasks(store: Store) -> None:
    pending, _ = await store.create(new())
    running, _ = await store.create(new(), claim_for="w1")
    cancelled = await store.cancel_pending(pending.id)
    assert cancelled is not None
    assert cancelled.status is TaskStatus.CANCELLED
    assert cancelled.cancel_requested
    assert cancelled.finished_at is not None
    assert await fetch(store, pending.id) == cancelled
    assert await store.cancel_pending(running.id) is None
    assert (await fetch(store, running.id)).status is TaskStatus.RUNNING
    assert await store.cancel_pending(pending.id) is None  # already terminal
    assert await store.cancel_pending("no-such-task") is None


async def test_request_cancel_works_only_on_running_tasks(store: Store) -> None:
    pending, _ = await store.create(new())
    running, _ = await store.create(new(), claim_for="w1")
    assert await store.cancel_requests("w1") == []
    assert await store.request_cancel(pending.id) is None
    untouched = await fetch(store, pending.id)
    assert untouched.status is TaskStatus.PENDING and not untouched.cancel_requested
    asked = await store.request_cancel(running.id)
    assert asked is not None
    assert asked.status is TaskStatus.RUNNING
    assert asked.cancel_requested
    assert await store.cancel_requests("w1") == [running.id]
    assert await store.cancel_requests("w2") == []
    assert await store.request_cancel("no-such-task") is None
    # Once it ended, it is no longer a request to act on.
    await store.finish(running, Outcome(TaskStatus.CANCELLED))
    assert await store.cancel_requests("w1") == []


# -- recover and release ---------------------------------------------------------------------


async def test_recover_puts_back_gives_up_or_cancels_a_dead_workers_tasks(
    store: Store,
) -> None:
    # A task whose process already died twice while running it.
    doomed, _ = await store.create(new(), claim_for="dead")
    for _ in range(2):
        await store.recover("dead")
        [reclaimed] = await store.claim("dead", 10)
        assert reclaimed.id == doomed.id
    assert (await fetch(store, doomed.id)).interruptions == 2

    fresh, _ = await store.create(new(max_attempts=1), claim_for="dead")
    to_cancel, _ = await store.create(new(), claim_for="dead")
    await store.request_cancel(to_cancel.id)
    other, _ = await store.create(new(), claim_for="alive")
    waiting, _ = await store.create(new(run_at=time.time() + 3600))

    before = time.time()
    recovered = await store.recover("dead")
    assert {t.id for t in recovered} == {doomed.id, fresh.id, to_cancel.id}

    again = await fetch(store, fresh.id)
    assert again.status is TaskStatus.PENDING
    assert again.interruptions == 1
    assert again.attempts == 1
    assert again.counted_attempts == 0  # the crash is not held against max_attempts
    assert again.run_at >= before
    assert again.finished_at is None and again.error is None

    failed = await fetch(store, doomed.id)
    assert failed.status is TaskStatus.FAILED
    assert failed.interruptions == 3
    assert "interrupted 3 times" in (failed.error or "")
    assert failed.finished_at is not None

    cancelled = await fetch(store, to_cancel.id)
    assert cancelled.status is TaskStatus.CANCELLED
    assert cancelled.finished_at is not None

    assert await fetch(store, other.id) == other
    assert await fetch(store, waiting.id) == waiting
    assert await store.recover("dead") == []  # nothing left running for it

    # GET /stats counts the two ends (no process finished them), not the hand-back.
    _, counts, _ = await store.stats_since(int(before // 60 * 60) - 60)
    ended: dict[str, int] = {}
    for _minute, name, outcome, bucket, n in counts:
        assert name == "noop"
        ended[outcome] = ended.get(outcome, 0) + n
        if outcome == "failed":
            assert bucket != NO_DURATION  # it ran from its start to the recovery
    assert ended == {"failed": 1, "cancelled": 1}


async def test_release_gives_a_running_task_back_without_counting_the_start(
    store: Store,
) -> None:
    task, _ = await store.create(new(max_attempts=1))
    [running] = await store.claim("w1", 1)
    await store.release(running)
    stored = await fetch(store, task.id)
    assert stored.status is TaskStatus.PENDING
    assert stored.released == 1
    assert stored.attempts == 1
    assert stored.counted_attempts == 0
    assert stored.finished_at is None
    [again] = await store.claim("w2", 1)
    assert again.attempts == 2
    assert again.counted_attempts == 1


async def test_release_by_another_owner_changes_nothing(store: Store) -> None:
    task, _ = await store.create(new(), claim_for="w1")
    await store.release(dataclasses.replace(task, owner="w2"))
    stored = await fetch(store, task.id)
    assert stored.status is TaskStatus.RUNNING
    assert stored.released == 0


async def test_release_of_a_task_asked_to_cancel_cancels_it(store: Store) -> None:
    task, _ = await store.create(new(), claim_for="w1")
    await store.request_cancel(task.id)
    await store.release(task)
    stored = await fetch(store, task.id)
    assert stored.status is TaskStatus.CANCELLED
    assert stored.finished_at is not None


# -- purge -----------------------------------------------------------------------------------


async def test_purge_deletes_only_terminal_tasks_finished_before_the_cutoff(
    store: Store,
) -> None:
    completed, _ = await store.create(new(), claim_for="w1")
    failed, _ = await store.create(new(), claim_for="w1")
    cancelled, _ = await store.create(new())
    pending, _ = await store.create(new(run_at=time.time() - 3600))
    running, _ = await store.create(new(), claim_for="w1")
    before = time.time() - 0.001
    await store.finish(completed, Outcome(TaskStatus.COMPLETED, result_json="1"))
    await store.finish(failed, Outcome(TaskStatus.FAILED, error="x"))
    await store.cancel_pending(cancelled.id)

    assert await store.purge(before) == 0  # all finished after it
    assert len(await all_tasks(store)) == 5
    assert await store.purge(time.time() + 1) == 3
    left = {t.id: t.status for t in await all_tasks(store)}
    assert left == {pending.id: TaskStatus.PENDING, running.id: TaskStatus.RUNNING}
    assert await store.purge(time.time() + 3600) == 0


async def test_purge_deletes_in_chunks(store: Store) -> None:
    for _ in range(7):
        task, _ = await store.create(new())
        await store.cancel_pending(task.id)
    kept, _ = await store.create(new())
    assert await store.purge(time.time() + 1, chunk=2) == 7
    assert [t.id for t in await all_tasks(store)] == [kept.id]


# -- progress --------------------------------------------------------------------------------


async def test_progress_keeps_the_latest_value_per_task(store: Store) -> None:
    one, _ = await store.create(new(), claim_for="w1")
    two, _ = await store.create(new(), claim_for="w1")
    store.report_progress(one.id, 10, "a")
    store.report_progress(two.id, 5, None)
    store.report_progress(one.id, 30, "c")
    store.report_progress(one.id, 20, "b")
    committed = store.progress_committed()
    assert committed is not None
    assert store.progress_committed() is committed  # one future for everything so far
    await committed
    first = await fetch(store, one.id)
    assert (first.progress, first.message) == (20.0, "b")  # the latest, not the largest
    second = await fetch(store, two.id)
    assert (second.progress, second.message) == (5.0, None)
    assert store.progress_committed() is None  # nothing left to wait for


async def test_progress_of_a_task_that_is_not_running_is_ignored(store: Store) -> None:
    pending, _ = await store.create(new())
    done, _ = await store.create(new(), claim_for="w1")
    await store.finish(done, Outcome(TaskStatus.COMPLETED, result_json="null"))
    store.report_progress(pending.id, 50, "early")
    store.report_progress(done.id, 50, "late")
    store.report_progress("no-such-task", 50, None)
    committed = store.progress_committed()
    assert committed is not None
    await committed
    assert await fetch(store, pending.id) == pending
    finished = await fetch(store, done.id)
    assert finished.progress is None and finished.message is None


async def test_progress_reported_before_finishing_is_kept(store: Store) -> None:
    task, _ = await store.create(new(), claim_for="w1")
    # A sync task's last ctx.progress() lands just before the runner records its result.
    store.report_progress(task.id, 100, "all done")
    await store.finish(task, Outcome(TaskStatus.COMPLETED, result_json='"ok"'))
    stored = await fetch(store, task.id)
    assert stored.status is TaskStatus.COMPLETED
    assert (stored.progress, stored.message) == (100.0, "all done")


# -- change detection ------------------------------------------------------------------------


async def test_changed_tells_of_work_and_cancels_committed_by_another_store(
    location: str,
) -> None:
    async with opened(location) as watcher, opened(location) as other:
        await watcher.changed()  # the first call only sets the baseline
        assert not await watcher.changed()
        assert not await watcher.changed()
        await other.create(new())
        assert await changed_soon(watcher)
        assert not await watcher.changed()
        running, _ = await other.create(new(), claim_for="w1")
        await changed_soon(watcher)  # the insert of a running task may or may not tell
        await other.request_cancel(running.id)
        assert await changed_soon(watcher)
        assert not await watcher.changed()


async def test_changed_on_sqlite_sees_its_own_writes_too(db_path: Path) -> None:
    async with opened(db_path) as store:
        await store.changed()
        assert not await store.changed()
        await store.create(new())
        assert await store.changed()
        assert not await store.changed()


async def test_on_sqlite_a_busy_event_loop_never_keeps_another_process_from_writing(
    db_path: Path,
) -> None:
    """The lock that orders the processes' writes is held only while the writer's thread runs
    a transaction, never while this process's event loop is busy with something else."""
    other_wrote = threading.Event()
    other_wrote_at: list[float] = []

    def another_process_writes() -> None:
        lock = ProcessWriteLock(str(db_path))  # its own descriptor: flock tells them apart
        with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as conn:
            lock.acquire()
            try:
                conn.execute("INSERT INTO schedules (id) VALUES ('other')")
                conn.commit()
            finally:
                lock.release()
                lock.close()
        other_wrote_at.append(time.monotonic())
        other_wrote.set()

    async with opened(db_path) as store:
        await store.create(new())
        writes = [asyncio.ensure_future(store.create(new())) for _ in range(200)]
        for _ in range(5):
            await asyncio.sleep(0)  # the committer has taken the batch and begun it
        threading.Thread(target=another_process_writes, daemon=True).start()
        time.sleep(1.5)  # the event loop is busy, on purpose
        loop_free_at = time.monotonic()
        await asyncio.gather(*writes)
        assert await asyncio.to_thread(other_wrote.wait, 30)
        assert other_wrote_at[0] < loop_free_at
        assert len(await store.list(statuses=[], name=None, before_id=None, limit=500)) == 201


# -- workers ---------------------------------------------------------------------------------


def worker(worker_id: str, pid: int = 1234) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id, host="host-a", pid=pid, pid_started="boot-1", seen_at=time.time() - 60
    )


def described(workers: list[WorkerInfo]) -> list[tuple[str, str, int, str]]:
    return sorted((w.id, w.host, w.pid, w.pid_started) for w in workers)


async def test_register_heartbeat_and_remove_workers(store: Store) -> None:
    assert await store.workers() == []
    w1, w2 = worker("w1"), worker("w2", pid=99)
    await store.register_worker(w1)
    await store.register_worker(w2)
    assert described(await store.workers()) == described([w1, w2])
    first_seen = {w.id: w.seen_at for w in await store.workers()}

    await asyncio.sleep(0.05)
    before = time.time()
    assert await store.heartbeat("w1")
    seen = {w.id: w.seen_at for w in await store.workers()}
    assert seen["w1"] >= before - 0.01
    assert seen["w2"] == pytest.approx(first_seen["w2"], abs=0.02)  # untouched
    assert not await store.heartbeat("ghost")
    assert "ghost" not in {w.id for w in await store.workers()}

    moved = dataclasses.replace(w1, pid=4321)
    await store.register_worker(moved)  # registering again replaces
    assert described(await store.workers()) == described([moved, w2])

    await store.remove_worker("w1")
    assert described(await store.workers()) == described([w2])
    assert not await store.heartbeat("w1")


async def test_orphan_owners_are_owners_of_running_tasks_without_a_worker(
    store: Store,
) -> None:
    await store.register_worker(worker("w1"))
    await store.create(new(), claim_for="w1")
    await store.create(new(), claim_for="gone")
    await store.create(new(), claim_for="gone")
    finished, _ = await store.create(new(), claim_for="also-gone")
    await store.finish(finished, Outcome(TaskStatus.COMPLETED, result_json="null"))
    await store.create(new())
    assert await store.orphan_owners() == ["gone"]
    await store.remove_worker("w1")
    assert sorted(await store.orphan_owners()) == ["gone", "w1"]
    await store.recover("gone")
    assert await store.orphan_owners() == ["w1"]


# -- close -----------------------------------------------------------------------------------


def store_at(location: str) -> Store:
    return PostgresStore(location) if is_postgres_url(location) else SqliteStore(location)


async def test_close_commits_what_was_already_asked_for(location: str) -> None:
    db = store_at(location)
    await db.open()
    try:
        pending = [asyncio.create_task(db.create(new())) for _ in range(20)]
        await asyncio.sleep(0)  # each has queued its write
    finally:
        await db.close()
    made = [(await p)[0].id for p in pending]
    async with opened(location) as again:
        assert {t.id for t in await all_tasks(again)} == set(made)


async def test_after_close_the_store_is_unavailable(location: str) -> None:
    db = store_at(location)
    await db.open()
    task, _ = await db.create(new())
    await db.close()
    with pytest.raises(StoreUnavailable):
        await db.create(new())
    with pytest.raises(StoreUnavailable):
        await db.claim("w1", 1)
    with pytest.raises(StoreUnavailable):
        await db.cancel_pending(task.id)
    with pytest.raises(StoreUnavailable):
        await db.register_worker(worker("w1"))
    with pytest.raises(StoreUnavailable):
        await db.get(task.id)
    await db.close()  # closing twice is harmless


async def test_a_cancel_stored_before_the_final_write_wins(store: Store) -> None:
    """A 202 for a cancel means the task ends cancelled, even if it finished meanwhile."""
    for outcome in (
        Outcome(TaskStatus.COMPLETED, result_json='"done"'),
        Outcome(TaskStatus.FAILED, error="boom"),
        Outcome(TaskStatus.PENDING, error="boom", retry_at=time.time() + 5),
    ):
        task, _ = await store.create(new(), claim_for="w1")
        assert await store.request_cancel(task.id) is not None
        await store.finish(task, outcome)
        stored = await fetch(store, task.id)
        assert stored.status is TaskStatus.CANCELLED
        assert stored.result is None and stored.error is None
        assert stored.finished_at is not None


async def test_unclaim_undoes_a_start_that_never_happened(store: Store) -> None:
    await store.create(new())
    [claimed] = await store.claim("w1", 1)
    assert claimed.attempts == 1 and claimed.started_at is not None
    await store.unclaim([claimed])
    stored = await fetch(store, claimed.id)
    assert stored.status is TaskStatus.PENDING
    assert stored.attempts == 0 and stored.started_at is None
    [again] = await store.claim("w2", 1)  # and it can be claimed again as if new
    assert again.id == claimed.id and again.attempts == 1
