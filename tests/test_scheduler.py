"""Periodic schedules: once per tick, pause, run now, no pile-up, one catch-up."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from scheduler import build_trigger, latest_tick
from tasks import cron, every
from tasks_service.config import Settings
from tasks_service.engines import is_postgres_url
from tests.harness import SAMPLE_MODULES
from tests.helpers import BOTH_STORES, App, AppFactory

pytestmark = [pytest.mark.anyio, BOTH_STORES]

SCHEDULED = (*SAMPLE_MODULES, "tests.scheduled_tasks")


@pytest.fixture
def ticks_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "ticks"
    monkeypatch.setenv("TICKS_FILE", str(path))
    return path


async def runs_of(app: App, schedule_id: str) -> list[dict[str, Any]]:
    page = (await app.client.get("/tasks", params={"limit": 500})).json()
    return [t for t in page["items"] if t["schedule_id"] == schedule_id]


def seconds(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def test_every_ticks_are_aligned_to_the_epoch() -> None:
    schedule = every(seconds=30)
    trigger = build_trigger(schedule)
    now = datetime(2026, 5, 4, 12, 0, 47, 500000, tzinfo=UTC)
    assert latest_tick(schedule, trigger, now) == datetime(2026, 5, 4, 12, 0, 30, tzinfo=UTC)
    upcoming = trigger.get_next_fire_time(None, now)
    assert upcoming == datetime(2026, 5, 4, 12, 1, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "now", "expected"),
    [
        ("* * * * *", datetime(2026, 5, 4, 12, 0, 47), datetime(2026, 5, 4, 12, 0)),
        ("0 2 * * *", datetime(2026, 5, 4, 1, 0), datetime(2026, 5, 3, 2, 0)),
        ("0 0 1 1 *", datetime(2026, 5, 4, 1, 0), datetime(2026, 1, 1, 0, 0)),
        # Crontab numbers weekdays from Sunday = 0 (2026-05-04 is a Monday).
        ("30 9 * * 1", datetime(2026, 5, 4, 9, 30), datetime(2026, 5, 4, 9, 30)),
        ("0 12 * * 0", datetime(2026, 5, 4, 9, 30), datetime(2026, 5, 3, 12, 0)),
        ("0 12 * * 7", datetime(2026, 5, 4, 9, 30), datetime(2026, 5, 3, 12, 0)),
        ("0 12 * * 1-5", datetime(2026, 5, 3, 13, 0), datetime(2026, 5, 1, 12, 0)),
        ("0 12 * * 6,0", datetime(2026, 5, 1, 13, 0), datetime(2026, 4, 26, 12, 0)),
        ("0 12 * * mon", datetime(2026, 5, 4, 13, 0), datetime(2026, 5, 4, 12, 0)),
    ],
)
def test_latest_cron_tick(expression: str, now: datetime, expected: datetime) -> None:
    schedule = cron(expression)
    trigger = build_trigger(schedule)
    found = latest_tick(schedule, trigger, now.replace(tzinfo=UTC))
    assert found == expected.replace(tzinfo=UTC)


def test_cron_in_another_time_zone() -> None:
    schedule = cron("0 2 * * *", tz="Europe/Paris")  # 02:00 in Paris is 00:00 UTC in May
    trigger = build_trigger(schedule)
    found = latest_tick(schedule, trigger, datetime(2026, 5, 4, 12, 0, tzinfo=UTC))
    assert found == datetime(2026, 5, 4, 0, 0, tzinfo=UTC)


async def test_schedules_are_listed_with_their_next_run(make_app: AppFactory) -> None:
    app = await make_app(modules=SCHEDULED)
    response = await app.client.get("/schedules")
    assert response.status_code == 200
    schedules = {s["id"]: s for s in response.json()}
    assert set(schedules) == {"purge_tasks", "tick", "slow_tick"}
    purge = schedules["purge_tasks"]
    assert purge["task"] == "purge_tasks" and purge["trigger"] == "every 3600 s"
    assert purge["paused"] is False
    next_purge = datetime.fromisoformat(purge["next_run_at"])
    assert next_purge.minute == 0 and next_purge.second == 0
    assert next_purge > datetime.now(UTC)
    assert schedules["tick"]["params"] == {}
    types = {t["name"]: t for t in (await app.client.get("/task-types")).json()}
    assert types["tick"]["schedule"] == "every 1 s"


async def test_a_one_second_schedule_fires_once_per_tick(
    make_app: AppFactory, ticks_file: Path
) -> None:
    app = await make_app(modules=SCHEDULED)
    await asyncio.sleep(3.5)
    runs = await runs_of(app, "tick")
    ticks = sorted(seconds(t["run_at"]) for t in runs)
    assert len(ticks) >= 2
    assert all(tick == int(tick) for tick in ticks)  # on whole seconds
    assert ticks == [ticks[0] + i for i in range(len(ticks))]  # every tick, once
    await asyncio.sleep(0.3)
    assert len(ticks_file.read_text().split()) >= len(ticks) - 1


async def test_two_services_on_one_database_fire_each_tick_once(
    settings: Settings, ticks_file: Path
) -> None:
    import contextlib

    import httpx

    from main import create_app

    async with contextlib.AsyncExitStack() as stack:
        apps = [create_app(replace(settings, modules=SCHEDULED)) for _ in range(2)]
        for application in apps:
            await stack.enter_async_context(application.router.lifespan_context(application))
        await asyncio.sleep(3.5)
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[0]), base_url="http://t")
        )
        runs = await runs_of(App(client, apps[0].state.service), "tick")
    ticks = sorted(seconds(t["run_at"]) for t in runs)
    assert len(ticks) >= 2
    assert len(set(ticks)) == len(ticks)
    assert ticks == [ticks[0] + i for i in range(len(ticks))]


async def test_pause_stops_firing_and_resume_starts_again(
    make_app: AppFactory, ticks_file: Path
) -> None:
    app = await make_app(modules=SCHEDULED)
    response = await app.client.post("/schedules/tick/pause")
    assert response.status_code == 200
    assert response.json()["paused"] is True and response.json()["next_run_at"] is None
    await asyncio.sleep(0.2)
    before = len(await runs_of(app, "tick"))
    await asyncio.sleep(2.2)
    assert len(await runs_of(app, "tick")) == before
    listed = {s["id"]: s for s in (await app.client.get("/schedules")).json()}
    assert listed["tick"]["paused"] is True
    resumed = await app.client.post("/schedules/tick/resume")
    assert resumed.json()["paused"] is False and resumed.json()["next_run_at"]
    await asyncio.sleep(2.2)
    assert len(await runs_of(app, "tick")) > before


async def test_pause_is_kept_across_restarts(make_app: AppFactory, settings: Settings) -> None:
    first = await make_app(modules=SCHEDULED)
    assert (await first.client.post("/schedules/slow_tick/pause")).status_code == 200
    second = await make_app(modules=SCHEDULED)  # a new service on the same file
    listed = {s["id"]: s for s in (await second.client.get("/schedules")).json()}
    assert listed["slow_tick"]["paused"] is True
    assert listed["tick"]["paused"] is False


async def test_run_now_works_even_when_paused(make_app: AppFactory) -> None:
    app = await make_app()
    await app.client.post("/schedules/purge_tasks/pause")
    response = await app.client.post("/schedules/purge_tasks/run")
    assert response.status_code == 202
    task = response.json()
    assert task["schedule_id"] == "purge_tasks" and task["name"] == "purge_tasks"
    assert response.headers["location"] == f"/tasks/{task['id']}"
    done = await app.wait_for(task["id"])
    assert done["status"] == "completed"
    assert done["result"] == {"deleted": 0, "older_than": 604800.0}


@pytest.mark.parametrize("action", ["pause", "resume", "run"])
async def test_unknown_schedule_is_404(app: App, action: str) -> None:
    response = await app.client.post(f"/schedules/nope/{action}")
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


async def test_a_slow_job_never_piles_up(make_app: AppFactory, ticks_file: Path) -> None:
    app = await make_app(modules=SCHEDULED)
    await asyncio.sleep(4.2)
    runs = await runs_of(app, "slow_tick")
    # 2.5 s runs on a 1 s schedule: ticks that come while one runs are skipped.
    assert 1 <= len(runs) <= 2
    active = [t for t in runs if t["status"] in ("pending", "running")]
    assert len(active) <= 1


async def test_a_missed_tick_fires_once_at_start_not_a_burst(
    make_app: AppFactory, settings: Settings
) -> None:
    first = await make_app()
    await first.client.post("/schedules/purge_tasks/resume")  # records the schedule

    hours_ago = time.time() - 5 * 3600
    if is_postgres_url(settings.db):
        conn = await asyncpg.connect(settings.db)
        await conn.execute(
            "UPDATE schedules SET last_fire_at = $1 WHERE id = 'purge_tasks'", hours_ago
        )
        await conn.close()
    else:

        def pretend_down_for_hours() -> None:
            db = sqlite3.connect(settings.db, isolation_level=None, timeout=15)
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "UPDATE schedules SET last_fire_at = ? WHERE id = 'purge_tasks'", (hours_ago,)
            )
            db.execute("COMMIT")
            db.close()

        # In a thread: the app's writer runs on this event loop and must not be blocked.
        await asyncio.to_thread(pretend_down_for_hours)
    restarted = await make_app()
    runs = await runs_of(restarted, "purge_tasks")
    assert len(runs) == 1
    tick = datetime.fromisoformat(runs[0]["run_at"])
    now = datetime.now(UTC)
    assert tick.minute == 0 and tick.second == 0 and now - tick < timedelta(hours=1)
    again = await make_app()  # a further start finds the tick handled: no second catch-up
    assert len(await runs_of(again, "purge_tasks")) == 1


async def test_purge_deletes_only_old_finished_tasks(make_app: AppFactory) -> None:
    app = await make_app()
    old_done = await app.post_task("noop")
    old_failed = await app.post_task("boom")
    await app.wait_for(old_done["id"])
    await app.wait_for(old_failed["id"])
    pending = await app.post_task("noop", delay=3600)
    running = await app.post_task("hang")
    await app.wait_for(running["id"], "running")
    await asyncio.sleep(1.1)
    recent = await app.post_task("noop")
    await app.wait_for(recent["id"])
    purge = await app.post_task("purge_tasks", params={"older_than": 1})
    done = await app.wait_for(purge["id"])
    assert done["result"] == {"deleted": 2, "older_than": 1.0}
    for gone in (old_done, old_failed):
        assert (await app.client.get(f"/tasks/{gone['id']}")).status_code == 404
    for kept in (pending, running, recent, purge):
        assert (await app.client.get(f"/tasks/{kept['id']}")).status_code == 200


@pytest.mark.parametrize(
    ("field", "names"),
    [
        ("*", "*"),
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("0-2", "sun,mon,tue"),
        ("*/2", "sun,tue,thu,sat"),
        ("1,3,sat", "mon,wed,sat"),
        ("mon-fri", "mon-fri"),
    ],
)
def test_crontab_weekdays_become_names(field: str, names: str) -> None:
    from tasks.schedules import crontab_weekdays

    assert crontab_weekdays(field) == names


@pytest.mark.parametrize("expression", ["* * * *", "0 0 * * 8", "0 0 * * 5-1", "61 * * * *"])
def test_bad_cron_expressions_fail_at_definition(expression: str) -> None:
    with pytest.raises(ValueError):
        cron(expression)
