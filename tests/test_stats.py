"""GET /stats: the per-minute counts against tasks the tests ran, on both stores and from
another service on the same database; the queue depth; the window; `minutes` refused; and
the reader's kept minutes against a computation from every row."""

from __future__ import annotations

import itertools
import math
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tasks_service.counted import BUCKETS_PER_OCTAVE, NO_DURATION
from tasks_service.models import NewTask, Outcome, Task, TaskStatus
from tasks_service.runtime import stats
from tasks_service.runtime.stats import MINUTE, StatsReader, Tally, minute_of, percentile
from tests.harness import eventually
from tests.helpers import BOTH_STORES, App, AppFactory

pytestmark = [pytest.mark.anyio, BOTH_STORES]

COUNTS = ("completed", "failed", "cancelled", "retried")


async def glance(app: App, minutes: int = 60) -> dict[str, Any]:
    response = await app.client.get("/stats", params={"minutes": minutes})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"series", "by_type"}
    return body


def totals(body: dict[str, Any]) -> dict[str, int]:
    return {key: sum(item[key] for item in body["series"]) for key in COUNTS}


def of_type(body: dict[str, Any], name: str) -> dict[str, Any]:
    found = [item for item in body["by_type"] if item["name"] == name]
    assert len(found) == 1, body["by_type"]
    return found[0]


async def test_counts_are_the_tasks_that_ran(make_app: AppFactory, tmp_path: Path) -> None:
    app = await make_app()
    done = [await app.post_task("noop") for _ in range(5)]
    slow = [
        await app.post_task(
            "record", params={"path": str(tmp_path / "r"), "mark": "x", "seconds": 0.3}
        )
        for _ in range(2)
    ]
    broken = [await app.post_task("boom") for _ in range(3)]
    flaky = await app.post_task("flaky", params={"path": str(tmp_path / "f"), "failures": 1})
    later = await app.post_task("noop", delay=3600)
    hanging = await app.post_task("hang")
    await app.wait_for(hanging["id"], "running")
    assert (await app.client.post(f"/tasks/{later['id']}/cancel")).status_code == 200
    assert (await app.client.post(f"/tasks/{hanging['id']}/cancel")).status_code == 202
    for task in [*done, *slow, *broken, flaky, hanging]:
        await app.wait_for(task["id"], timeout=30)

    body = await glance(app, minutes=5)
    # noop 5, record 2, flaky 1 (after a retried attempt); boom 3; the two cancels.
    assert totals(body) == {"completed": 8, "failed": 3, "cancelled": 2, "retried": 1}
    assert [item["name"] for item in body["by_type"]] == sorted(
        ["noop", "record", "boom", "flaky", "hang"]
    )
    noop = of_type(body, "noop")
    assert (noop["completed"], noop["failed"], noop["cancelled"]) == (5, 0, 1)
    assert (of_type(body, "boom")["failed"], of_type(body, "boom")["completed"]) == (3, 0)
    assert of_type(body, "flaky")["completed"] == 1
    assert of_type(body, "hang")["cancelled"] == 1
    # Durations are started_at to the attempt's end: the 0.3 s sleeps took at least that,
    # less the buckets' reach (within 9%).
    record = of_type(body, "record")
    assert record["duration_p50"] >= 0.3 * 0.91
    assert record["duration_p95"] >= record["duration_p50"]
    for item in body["series"]:
        if item["completed"] + item["failed"] + item["retried"] == 0:
            assert item["duration_p50"] is None and item["duration_p95"] is None
        else:
            assert 0 < item["duration_p50"] <= item["duration_p95"]


async def test_another_service_on_the_same_database_sees_the_same_counts(
    make_app: AppFactory,
) -> None:
    first = await make_app()
    second = await make_app()  # another process, or host, on the same database
    for task in [await first.post_task("noop") for _ in range(4)]:
        await first.wait_for(task["id"])
    for task in [await second.post_task("boom") for _ in range(2)]:
        await second.wait_for(task["id"])
    expected = {"completed": 4, "failed": 2, "cancelled": 0, "retried": 0}
    assert totals(await glance(first)) == expected
    assert totals(await glance(second)) == expected
    assert (await glance(first))["by_type"] == (await glance(second))["by_type"]


async def test_queue_depth_is_what_waits_and_is_due(make_app: AppFactory) -> None:
    app = await make_app()
    assert (await app.client.post("/task-types/echo/pause")).status_code == 200
    for _ in range(3):
        await app.post_task("echo", params={"text": "waits"})
    await app.post_task("echo", params={"text": "not due"}, delay=3600)

    async def depth_is(value: int) -> bool:
        return bool((await glance(app, minutes=1))["series"][-1]["queue_depth"] == value)

    await eventually(lambda: depth_is(3), timeout=20)
    assert (await app.client.post("/task-types/echo/resume")).status_code == 200
    await eventually(lambda: depth_is(0), timeout=20)


async def test_the_window_is_one_item_per_minute_up_to_this_one(app: App) -> None:
    for minutes in (1, 60, 1440):
        body = await glance(app, minutes)
        series = body["series"]
        assert len(series) == minutes
        moments = [datetime.fromisoformat(item["minute"]) for item in series]
        assert all(m.tzinfo == UTC and m.second == 0 and m.microsecond == 0 for m in moments)
        assert all(b.timestamp() - a.timestamp() == 60 for a, b in itertools.pairwise(moments))
        assert abs(moments[-1].timestamp() - minute_of(time.time())) <= 60
        assert set(series[0]) == {"minute", *COUNTS, "queue_depth", "duration_p50", "duration_p95"}
    assert len((await glance(app, 60))["series"]) == 60  # a shorter window after a longer
    default = await app.client.get("/stats")
    assert default.status_code == 200 and len(default.json()["series"]) == 60


async def test_minutes_outside_1_to_1440_are_refused_and_change_nothing(app: App) -> None:
    done = await app.post_task("noop")
    await app.wait_for(done["id"])
    before = await glance(app, 5)
    for minutes in ("0", "1441", "abc", "-1", "1.5", ""):
        response = await app.client.get("/stats", params={"minutes": minutes})
        assert response.status_code == 422, (minutes, response.text)
        assert response.json()["detail"][0]["loc"] == ["query", "minutes"]
    after = await glance(app, 5)
    assert (
        totals(after)
        == totals(before)
        == {"completed": 1, "failed": 0, "cancelled": 0, "retried": 0}
    )
    assert after["by_type"] == before["by_type"]
    assert (await app.client.get("/tasks")).json()["items"] == [await app.task(done["id"])]


async def test_what_no_finish_counts_the_store_counts(app: App) -> None:
    """Ends that are not a finish (a pending cancel, a shutdown's release of a cancelled
    task, a stored cancel overriding a finish) are counted once; hand-backs are not ends."""
    store = app.service.store
    owner = app.service.runner.worker_id  # running "for" this runner, which never saw them
    await store.set_type_paused("ghost", True)  # whatever goes back to pending stays there

    async def running() -> Task:
        task, _ = await store.create(NewTask(name="ghost", params={}), claim_for=owner)
        return task

    pending, _ = await store.create(NewTask(name="ghost", params={}, run_at=time.time() + 999))
    assert await store.cancel_pending(pending.id) is not None
    overridden = await running()
    await store.request_cancel(overridden.id)  # stored before the finish lands
    await store.finish(overridden, Outcome(TaskStatus.COMPLETED, result_json="1"), 0.5)
    assert (await store.get(overridden.id)).status is TaskStatus.CANCELLED  # type: ignore[union-attr]
    released = await running()
    await store.request_cancel(released.id)
    await store.release(released)  # shutdown: it was to be cancelled, so it is
    await store.release(await running())  # shutdown: back to pending
    await store.unclaim([await running()])
    await store.finish(await running(), Outcome(TaskStatus.FAILED, error="x"), 0.25)

    body = await glance(app, 5)
    ghost = of_type(body, "ghost")
    assert (ghost["completed"], ghost["failed"], ghost["cancelled"]) == (0, 1, 3)
    assert totals(body)["retried"] == 0
    # The overridden attempt's duration still counts (it ran), the failed one's too.
    assert ghost["duration_p50"] is not None


async def test_minutes_older_than_a_day_are_forgotten(app: App) -> None:
    store = app.service.store
    recent = minute_of(time.time()) - 86400 + 3600  # still in a day's window
    old = minute_of(time.time()) - 2 * 86400
    for minute in (old, recent):
        await store.record_depth(minute, 7, float(minute))
    await stats.forget_old_minutes(store)  # (the watcher does it too, every 10 s)
    _, _, depths = await store.stats_since(old - 60)
    assert depths == [(recent, 7)]


# -- the reader alone, on rows made up ----------------------------------------------------------


async def test_percentiles_from_the_buckets_are_within_nine_percent() -> None:
    rng = random.Random(7)
    values = sorted(rng.lognormvariate(-3, 1.2) for _ in range(5000))
    tally = Tally()
    for value in values:
        tally.count("completed", math.floor(BUCKETS_PER_OCTAVE * math.log2(value)), 1)
    for q in (0.5, 0.95):
        estimate = percentile(tally.durations, tally.timed, q)
        true = values[int(q * len(values))]
        assert estimate is not None and abs(estimate / true - 1) < 0.09, (q, estimate, true)
    assert percentile({}, 0, 0.5) is None


class MadeUpStore:
    """The reads StatsReader makes, over rows held here; its clock is set by the test (and
    runs ahead of this host's, as a database's may)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.rows: list[tuple[int, str, str, int, int]] = []
        self.depths: dict[int, int] = {}
        self.reads: list[tuple[int, int]] = []

    async def stats_since(
        self, first: int, *, scan: bool = False
    ) -> tuple[float, list[tuple[int, str, str, int, int]], list[tuple[int, int]]]:
        self.reads.append((first, minute_of(self.now)))
        summed: dict[tuple[int, str, str, int], int] = {}
        for minute, name, outcome, bucket, n in self.rows:
            if first <= minute:
                key = (minute, name, outcome, bucket)
                summed[key] = summed.get(key, 0) + n
        depths = sorted((m, d) for m, d in self.depths.items() if first <= m)
        return self.now, [(*key, n) for key, n in summed.items()], depths

    async def depth_before(self, minute: int) -> int | None:
        earlier = [m for m in self.depths if m < minute]
        return self.depths[max(earlier)] if earlier else None

    def happen(self, rng: random.Random) -> None:
        """What ends now: written to the minute of the store's clock, as the trigger does."""
        minute = minute_of(self.now)
        for _ in range(rng.randrange(4)):
            outcome = rng.choice([*COUNTS, "completed", "completed"])
            bucket = (
                NO_DURATION
                if outcome == "cancelled" and rng.random() < 0.5
                else (rng.randrange(-40, 8))
            )
            self.rows.append((minute, rng.choice("abc"), outcome, bucket, rng.randrange(1, 4)))
        if rng.random() < 0.3:
            self.depths[minute] = rng.randrange(50)


async def test_kept_minutes_answer_as_every_row_would() -> None:
    """Minutes written as the store writes them (to its clock's current minute), read as
    the clock moves on over two days: the reader that keeps minutes answers as one that
    reads every row each time, and once warm reads only the last minute or two."""
    rng = random.Random(21)
    store = MadeUpStore()
    reader = StatsReader(store)  # type: ignore[arg-type]
    for step in range(4_700):  # two days in 37 s steps
        store.now += 37
        store.happen(rng)
        if step % 11 == 0:
            minutes = rng.choice([1, 5, 60, 61, 180, 1440])
            answer = await reader.glance(minutes)
            assert answer == await StatsReader(store).glance(minutes)  # type: ignore[arg-type]
    await reader.glance(1440)
    store.reads.clear()
    await reader.glance(1440)
    [(first, last)] = store.reads
    assert last - first <= 2 * MINUTE
