"""Schedules made at runtime: POST, PATCH and DELETE /schedules, and the Python API.

Validated before anything is stored, stored in the database, seen by every service on that
database, fired once per tick by all of them, never again once deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from tasks_service import create_app
from tasks_service.config import Settings
from tasks_service.engines import is_postgres_url
from tasks_service.models import (
    InvalidParams,
    InvalidSchedule,
    NewTask,
    ScheduleExists,
    ScheduleInCode,
    ScheduleNotFound,
    UnknownTaskType,
)
from tests.harness import SAMPLE_MODULES, eventually
from tests.helpers import BOTH_STORES, App, AppFactory

pytestmark = [pytest.mark.anyio, BOTH_STORES]

SCHEDULED = (*SAMPLE_MODULES, "tests.scheduled_tasks")
FIELDS = {
    "id", "task", "params", "trigger", "every", "cron", "tz", "next_run_at", "paused",
    "source", "last_run_at", "last_task_id",
}  # fmt: skip


async def create(app: App, expect: int = 201, **body: Any) -> dict[str, Any]:
    response = await app.client.post("/schedules", json=body)
    assert response.status_code == expect, response.text
    result: dict[str, Any] = response.json()
    return result


async def listed(app: App) -> dict[str, dict[str, Any]]:
    response = await app.client.get("/schedules")
    assert response.status_code == 200, response.text
    return {s["id"]: s for s in response.json()}


async def runs(app: App, schedule_id: str) -> list[dict[str, Any]]:
    page = await app.client.get("/tasks", params={"schedule_id": schedule_id, "limit": 500})
    assert page.status_code == 200, page.text
    items: list[dict[str, Any]] = page.json()["items"]
    return items


def seconds(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


# -- creating ---------------------------------------------------------------------------------


async def test_a_schedule_made_over_http_is_shown_like_one_in_code(app: App) -> None:
    response = await app.client.post(
        "/schedules",
        json={"id": "hourly-echo", "task": "echo", "params": {"text": "hi"}, "every": 3600},
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/schedules/hourly-echo"
    made = response.json()
    assert set(made) == FIELDS
    assert made["task"] == "echo" and made["params"] == {"text": "hi", "extra": None}
    assert made["trigger"] == "every 3600 s" and made["every"] == 3600
    assert made["cron"] is None and made["tz"] is None
    assert made["source"] == "api" and made["paused"] is False
    assert made["last_run_at"] is None and made["last_task_id"] is None
    upcoming = datetime.fromisoformat(made["next_run_at"])
    assert upcoming.minute == 0 and upcoming.second == 0 and upcoming > datetime.now(UTC)

    assert (await app.client.get("/schedules/hourly-echo")).json() == made
    schedules = await listed(app)
    assert schedules["hourly-echo"] == made
    purge = schedules["purge_tasks"]
    assert set(purge) == FIELDS and purge["source"] == "code" and purge["every"] == 3600
    assert next(iter(schedules)) == "purge_tasks"  # those in code first


async def test_the_id_is_generated_when_absent(app: App) -> None:
    first = await create(app, task="noop", every=60)
    second = await create(app, task="noop", every=60)
    assert first["id"] != second["id"] and len(first["id"]) == 26
    assert {first["id"], second["id"]} <= set(await listed(app))


async def test_a_cron_schedule_is_read_in_its_zone(app: App) -> None:
    made = await create(app, id="paris", task="noop", cron="30 2 * * *", tz="Europe/Paris")
    assert made["cron"] == "30 2 * * *" and made["tz"] == "Europe/Paris"
    assert made["every"] is None and made["trigger"] == "cron '30 2 * * *' (Europe/Paris)"
    local = datetime.fromisoformat(made["next_run_at"]).astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (2, 30)
    utc = await create(app, id="utc", task="noop", cron="0 12 * * 0")  # Sunday, as in crontab
    upcoming = datetime.fromisoformat(utc["next_run_at"])
    assert utc["tz"] == "UTC" and upcoming.weekday() == 6 and upcoming.hour == 12


async def test_a_taken_id_is_409_in_code_or_at_runtime(app: App) -> None:
    await create(app, id="mine", task="noop", every=60)
    again = await create(app, 409, id="mine", task="noop", every=30)
    assert "mine" in again["detail"]
    assert (await app.client.get("/schedules/mine")).json()["every"] == 60
    in_code = await create(app, 409, id="purge_tasks", task="noop", every=60)
    assert "purge_tasks" in in_code["detail"]
    assert (await listed(app))["purge_tasks"]["task"] == "purge_tasks"


# -- firing -----------------------------------------------------------------------------------


async def test_it_fires_once_per_tick_and_records_its_latest_run(app: App) -> None:
    await create(app, id="every-second", task="noop", every=1)
    await eventually(lambda: _has_runs(app, "every-second", 3))
    fired = await runs(app, "every-second")
    ticks = sorted(seconds(t["run_at"]) for t in fired)
    assert all(tick == int(tick) for tick in ticks)  # on whole seconds
    assert ticks == [ticks[0] + i for i in range(len(ticks))]  # every tick, once
    assert {t["name"] for t in fired} == {"noop"} and {t["schedule_id"] for t in fired} == {
        "every-second"
    }
    info = (await app.client.get("/schedules/every-second")).json()
    recorded = await app.task(info["last_task_id"])
    assert recorded["schedule_id"] == "every-second"
    assert info["last_run_at"] == recorded["run_at"]
    assert seconds(info["last_run_at"]) >= ticks[-2]


async def _has_runs(app: App, schedule_id: str, count: int) -> bool:
    return len(await runs(app, schedule_id)) >= count


async def test_run_now_and_pause_work_on_one_made_at_runtime(app: App) -> None:
    await create(app, id="later", task="echo", params={"text": "now"}, every=3600)
    paused = await app.client.post("/schedules/later/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert paused.json()["next_run_at"] is None
    run = await app.client.post("/schedules/later/run")
    assert run.status_code == 202
    done = await app.wait_for(run.json()["id"])
    assert done["result"]["text"] == "now" and done["schedule_id"] == "later"
    resumed = await app.client.post("/schedules/later/resume")
    assert resumed.json()["paused"] is False and resumed.json()["next_run_at"]


# -- changing ---------------------------------------------------------------------------------


async def test_patch_changes_what_is_given_and_the_next_tick_uses_it(app: App) -> None:
    await create(app, id="changing", task="echo", params={"text": "old"}, every=3600)
    response = await app.client.patch("/schedules/changing", json={"params": {"text": "new"}})
    assert response.status_code == 200, response.text
    assert response.json()["params"] == {"text": "new", "extra": None}
    assert response.json()["every"] == 3600
    response = await app.client.patch("/schedules/changing", json={"every": 1})
    assert response.json()["every"] == 1 and response.json()["params"]["text"] == "new"
    await eventually(lambda: _has_runs(app, "changing", 1))
    run = (await runs(app, "changing"))[0]
    assert run["params"]["text"] == "new"
    response = await app.client.patch(
        "/schedules/changing", json={"cron": "0 3 * * *", "tz": "Asia/Tokyo"}
    )
    changed = response.json()
    assert changed["cron"] == "0 3 * * *" and changed["tz"] == "Asia/Tokyo"
    assert changed["every"] is None
    moved = await app.client.patch("/schedules/changing", json={"tz": "America/New_York"})
    assert moved.json()["cron"] == "0 3 * * *" and moved.json()["tz"] == "America/New_York"
    kept_zone = await app.client.patch("/schedules/changing", json={"cron": "0 4 * * *"})
    assert kept_zone.json()["tz"] == "America/New_York"
    paused = await app.client.patch("/schedules/changing", json={"paused": True})
    assert paused.json()["paused"] is True and paused.json()["next_run_at"] is None
    unchanged = await app.client.patch("/schedules/changing", json={})
    assert unchanged.status_code == 200 and unchanged.json() == paused.json()


async def test_a_changed_trigger_stops_the_old_ticks(app: App) -> None:
    await create(app, id="slowed", task="noop", every=1)
    await eventually(lambda: _has_runs(app, "slowed", 1))
    response = await app.client.patch("/schedules/slowed", json={"every": 3600})
    assert response.status_code == 200
    await asyncio.sleep(0.3)  # a run already due may still start; then none comes
    count = len(await runs(app, "slowed"))
    await asyncio.sleep(2.2)
    assert len(await runs(app, "slowed")) == count


async def test_only_a_change_of_trigger_moves_where_its_ticks_begin(app: App) -> None:
    """Ticks before a schedule's trigger was set are not its own (a late fire, a catch-up);
    a change of params alone keeps them."""
    store = app.service.store
    await create(app, id="moving", task="echo", params={"text": "a"}, every=60)
    made = await store.get_schedule("moving")
    assert made is not None
    await app.client.patch("/schedules/moving", json={"params": {"text": "b"}, "paused": True})
    same = await store.get_schedule("moving")
    assert same is not None and same.trigger_set_at == made.trigger_set_at
    assert same.revision > made.revision
    await app.client.patch("/schedules/moving", json={"every": 30})
    moved = await store.get_schedule("moving")
    assert moved is not None and moved.trigger_set_at > made.trigger_set_at


async def test_a_tick_missed_while_down_is_caught_up_once(
    make_app: AppFactory, settings: Settings
) -> None:
    first = await make_app()
    await create(first, id="hourly", task="noop", every=3600)
    hours_ago = time.time() - 5 * 3600
    await execute(
        settings.db,
        "UPDATE schedules SET last_fire_at = ?, trigger_set_at = ? WHERE id = 'hourly'",
        hours_ago,
        hours_ago,
    )
    restarted = await make_app()
    [run] = await runs(restarted, "hourly")
    tick = datetime.fromisoformat(run["run_at"])
    assert tick.minute == 0 and tick.second == 0 and time.time() - tick.timestamp() < 3600
    again = await make_app()  # the tick is handled: no second catch-up
    assert len(await runs(again, "hourly")) == 1


async def execute(db: str, sql: str, *params: Any) -> None:
    """A statement straight on the database (SQLite in a thread: the apps' writers run on
    this event loop and must not be blocked)."""
    if is_postgres_url(db):
        conn = await asyncpg.connect(db)
        numbered = sql.replace("?", "$1", 1).replace("?", "$2", 1)
        await conn.execute(numbered, *params)
        await conn.close()
        return

    def run() -> None:
        conn = sqlite3.connect(db, isolation_level=None, timeout=15)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(sql, params)
        conn.execute("COMMIT")
        conn.close()

    await asyncio.to_thread(run)


async def test_schedules_in_code_cannot_be_changed_or_deleted(make_app: AppFactory) -> None:
    app = await make_app(modules=SCHEDULED)
    before = await listed(app)
    for method, body in (("PATCH", {"every": 60}), ("PATCH", {"paused": True}), ("DELETE", None)):
        response = await app.client.request(method, "/schedules/tick", json=body)
        assert response.status_code == 409, response.text
        assert "defined in code" in response.json()["detail"]
    after = await listed(app)
    assert after["tick"]["every"] == before["tick"]["every"] == 1
    assert after["tick"]["paused"] is False


async def test_unknown_schedules_are_404(app: App) -> None:
    for method, path, body in (
        ("GET", "/schedules/nope", None),
        ("PATCH", "/schedules/nope", {"every": 60}),
        ("DELETE", "/schedules/nope", None),
        ("PATCH", "/schedules/bad%20id", {"every": 60}),
        ("DELETE", "/schedules/" + "x" * 300, None),
    ):
        response = await app.client.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert "no schedule" in response.json()["detail"]


# -- deleting ---------------------------------------------------------------------------------


async def test_a_deleted_schedule_never_fires_again(app: App) -> None:
    await create(app, id="doomed", task="noop", every=1)
    await eventually(lambda: _has_runs(app, "doomed", 1))
    response = await app.client.delete("/schedules/doomed")
    assert response.status_code == 204 and response.content == b""
    count = len(await runs(app, "doomed"))
    assert (await app.client.get("/schedules/doomed")).status_code == 404
    assert "doomed" not in await listed(app)
    await asyncio.sleep(2.5)
    assert len(await runs(app, "doomed")) == count
    assert (await app.client.delete("/schedules/doomed")).status_code == 404
    # The id is free again.
    again = await create(app, id="doomed", task="noop", every=3600)
    assert again["last_task_id"] is None


async def test_a_process_that_has_not_heard_of_a_change_cannot_fire_the_old_one(
    app: App,
) -> None:
    """A tick names the revision it was fired from; the database takes only the current one."""
    await create(app, id="stale", task="noop", every=3600)
    store = app.service.store
    [stored] = [s for s in await store.schedules_since(0) if s.id == "stale"]

    def tick(at: float) -> tuple[NewTask, int]:
        key = f"tick:stale:{datetime.fromtimestamp(at, UTC).isoformat()}"
        new = NewTask(name="noop", params={}, run_at=at, schedule_id="stale", unique_key=key)
        return new, stored.revision

    await app.client.patch("/schedules/stale", json={"every": 7200})
    assert await store.create_ticks([tick(1_000_000.0)]) == []
    await app.client.delete("/schedules/stale")
    current = next(s for s in await store.schedules_since(0) if s.id == "stale")
    assert current.deleted
    assert await store.create_ticks([(tick(1_000_001.0)[0], current.revision)]) == []
    assert await runs(app, "stale") == []


# -- validation -------------------------------------------------------------------------------

BAD_CREATES = [
    ({}, "task"),
    ({"task": "noop"}, "give cron"),
    ({"task": "noop", "every": 60, "cron": "* * * * *"}, "not both"),
    ({"task": "noop", "every": 0.5}, "every"),
    ({"task": "noop", "every": 0}, "every"),
    ({"task": "noop", "every": -60}, "every"),
    ({"task": "noop", "every": 1e12}, "every"),
    ({"task": "noop", "every": "60"}, "every"),
    ({"task": "noop", "every": True}, "every"),
    ({"task": "noop", "every": [60]}, "every"),
    ({"task": "noop", "cron": "61 * * * *"}, "cron"),
    ({"task": "noop", "cron": "* * * *"}, "5 fields"),
    ({"task": "noop", "cron": "* * * * 8"}, "cron"),
    ({"task": "noop", "cron": "*/0 * * * *"}, "cron"),
    ({"task": "noop", "cron": "0 0 31 2 *"}, "never fires"),
    ({"task": "noop", "cron": ""}, "cron"),
    ({"task": "noop", "cron": 5}, "cron"),
    ({"task": "noop", "cron": "* * * * *", "tz": "Mars/Olympus"}, "time zone"),
    ({"task": "noop", "cron": "* * * * *", "tz": "../../etc/passwd"}, "time zone"),
    ({"task": "noop", "cron": "* * * * *", "tz": 2}, "tz"),
    ({"task": "noop", "every": 60, "tz": "UTC"}, "cron schedules only"),
    ({"task": "nope", "every": 60}, "known types"),
    ({"task": 5, "every": 60}, "task"),
    ({"task": "bounded", "every": 60}, "count"),
    ({"task": "bounded", "every": 60, "params": {"count": 11}}, "count"),
    ({"task": "bounded", "every": 60, "params": {"count": "many"}}, "count"),
    ({"task": "noop", "every": 60, "params": {"surprise": 1}}, "surprise"),
    ({"task": "noop", "every": 60, "params": [1]}, "params"),
    ({"task": "noop", "every": 60, "id": ""}, "id"),
    ({"task": "noop", "every": 60, "id": "has space"}, "id"),
    ({"task": "noop", "every": 60, "id": "a/b"}, "id"),
    ({"task": "noop", "every": 60, "id": "é"}, "id"),
    ({"task": "noop", "every": 60, "id": "x" * 101}, "id"),
    ({"task": "noop", "every": 60, "id": "line\n"}, "id"),
    ({"task": "noop", "every": 60, "id": 7}, "id"),
    ({"task": "noop", "every": 60, "paused": "yes"}, "paused"),
    ({"task": "noop", "every": 60, "paused": 1}, "paused"),
    ({"task": "noop", "every": 60, "surprise": 1}, "surprise"),
]


@pytest.mark.parametrize(("body", "said"), BAD_CREATES)
async def test_a_bad_create_is_422_and_stores_nothing(
    app: App, body: dict[str, Any], said: str
) -> None:
    before = await listed(app)
    response = await app.client.post("/schedules", json=body)
    assert response.status_code == 422, response.text
    assert said in response.text
    assert await listed(app) == before
    assert await app.service.store.schedules_since(0) == []


@pytest.mark.parametrize(
    "content", [b"{", b"[]", b'"every"', b"null", b'{"task": "noop", "every": NaN}']
)
async def test_a_create_that_is_not_a_json_object_is_422(app: App, content: bytes) -> None:
    response = await app.client.post(
        "/schedules", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert await app.service.store.schedules_since(0) == []


BAD_CHANGES = [
    ({"every": 0}, "every"),
    ({"every": "often"}, "every"),
    ({"cron": "not cron"}, "cron"),
    ({"cron": "* * * * *", "every": 60}, "not both"),
    ({"tz": "UTC"}, "cron schedules only"),
    ({"every": 60, "tz": "UTC"}, "cron schedules only"),
    ({"params": {"count": 0}}, "count"),
    ({"params": {"count": 1, "other": 2}}, "other"),
    ({"params": "count=1"}, "params"),
    ({"paused": "no"}, "paused"),
    ({"task": "noop"}, "task"),
    ({"id": "renamed"}, "id"),
]


@pytest.mark.parametrize(("body", "said"), BAD_CHANGES)
async def test_a_bad_change_is_422_and_changes_nothing(
    app: App, body: dict[str, Any], said: str
) -> None:
    made = await create(app, id="steady", task="bounded", params={"count": 3}, every=3600)
    response = await app.client.patch("/schedules/steady", json=body)
    assert response.status_code == 422, response.text
    assert said in response.text
    assert (await app.client.get("/schedules/steady")).json() == made


async def test_a_body_over_the_limit_is_413_and_stores_nothing(make_app: AppFactory) -> None:
    app = await make_app(max_body=2000)
    body = {"id": "big", "task": "echo", "params": {"text": "x" * 3000}, "every": 60}
    response = await app.client.post("/schedules", json=body)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    await create(app, id="small", task="echo", params={"text": "x"}, every=60)
    patch = await app.client.patch("/schedules/small", json={"params": {"text": "x" * 3000}})
    assert patch.status_code == 413
    assert (await app.client.get("/schedules/small")).json()["params"]["text"] == "x"
    assert "big" not in await listed(app)


async def test_the_token_guards_the_new_routes(make_app: AppFactory) -> None:
    app = await make_app(api_token="s3cret")
    for method, path in (
        ("POST", "/schedules"),
        ("GET", "/schedules/purge_tasks"),
        ("PATCH", "/schedules/x"),
        ("DELETE", "/schedules/x"),
    ):
        response = await app.client.request(method, path, json={"task": "noop", "every": 60})
        assert response.status_code == 401, (method, path)
    good = {"Authorization": "Bearer s3cret"}
    response = await app.client.post("/schedules", json={"task": "noop", "every": 60}, headers=good)
    assert response.status_code == 201


# -- kept, and shared -------------------------------------------------------------------------


async def test_schedules_survive_a_restart(make_app: AppFactory) -> None:
    first = await make_app()
    await create(first, id="kept", task="echo", params={"text": "k"}, cron="0 6 * * 1-5")
    await create(first, id="gone", task="noop", every=60)
    await first.client.delete("/schedules/gone")
    await first.client.post("/schedules/kept/pause")
    second = await make_app()  # a new service on the same database
    schedules = await listed(second)
    assert "gone" not in schedules
    kept = schedules["kept"]
    assert kept["cron"] == "0 6 * * 1-5" and kept["params"]["text"] == "k" and kept["paused"]


@contextlib.asynccontextmanager
async def service_on(settings: Settings) -> AsyncIterator[App]:
    """A service of its own on the test's database, as another process or host would be."""
    application = create_app(replace(settings, modules=SAMPLE_MODULES))
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(application.router.lifespan_context(application))
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=application), base_url="http://t")
        )
        yield App(client, application.state.service)


@contextlib.asynccontextmanager
async def two_services(settings: Settings) -> AsyncIterator[tuple[App, App]]:
    async with service_on(settings) as one, service_on(settings) as other:
        yield one, other


async def test_another_service_sees_each_create_change_and_delete(settings: Settings) -> None:
    async with two_services(settings) as (one, other):
        await create(one, id="shared", task="echo", params={"text": "a"}, every=3600)

        async def other_shows(check: Any) -> bool:
            response = await other.client.get("/schedules/shared")
            return bool(check(response))

        await eventually(lambda: other_shows(lambda r: r.status_code == 200))
        shown = (await other.client.get("/schedules/shared")).json()
        assert shown["source"] == "api" and shown["params"]["text"] == "a"
        await other.client.patch("/schedules/shared", json={"cron": "15 * * * *"})
        await eventually(lambda: _shows(one, "shared", lambda s: s.get("cron") == "15 * * * *"))
        await one.client.delete("/schedules/shared")
        await eventually(lambda: other_shows(lambda r: r.status_code == 404))
        assert "shared" not in await listed(other)


async def _shows(app: App, schedule_id: str, check: Any) -> bool:
    response = await app.client.get(f"/schedules/{schedule_id}")
    return response.status_code == 200 and bool(check(response.json()))


async def test_two_services_fire_each_tick_once(settings: Settings) -> None:
    async with two_services(settings) as (one, other):
        await create(one, id="both", task="noop", every=1)
        await eventually(lambda: _shows(other, "both", lambda s: True))
        await asyncio.sleep(3.2)
        await one.client.delete("/schedules/both")
        fired = await runs(other, "both")
    ticks = sorted(seconds(t["run_at"]) for t in fired)
    assert len(ticks) >= 3
    assert ticks == [ticks[0] + i for i in range(len(ticks))]  # each tick once, none missed


async def test_a_service_never_asked_picks_up_a_new_schedule_by_itself(
    settings: Settings,
) -> None:
    """The service that made it stops; the other, which no request has told of it, goes on
    firing it: it found the schedule in the database on its own."""
    async with service_on(settings) as other:
        async with service_on(settings) as one:
            await create(one, id="handed-over", task="noop", every=1)
            await asyncio.sleep(1.5)  # the other's own look at the database comes meanwhile
        stopped_at = time.time()
        await asyncio.sleep(2.5)
        fired = await runs(other, "handed-over")
    assert any(seconds(t["run_at"]) > stopped_at for t in fired)


# -- the Python API ---------------------------------------------------------------------------


async def test_the_python_api_makes_changes_and_deletes_schedules(app: App) -> None:
    from tests.sample_tasks import echo

    service = app.service
    made = await service.create_schedule(
        echo, id="reminder:42", params={"text": "hello"}, cron="0 9 * * 1", tz="Europe/Paris"
    )
    assert made.source == "api" and made.task == "echo" and made.tz == "Europe/Paris"
    assert (await app.client.get("/schedules/reminder:42")).json() == made.to_json()
    changed = await service.update_schedule("reminder:42", every=86400)
    assert changed.every == 86400 and changed.cron is None and changed.tz is None
    assert [s.id for s in await service.list_schedules()][-1] == "reminder:42"
    await service.delete_schedule("reminder:42")
    with pytest.raises(ScheduleNotFound):
        await service.get_schedule("reminder:42")
    generated = await service.create_schedule("noop", every=60, paused=True)
    assert generated.paused and generated.next_run_at is None
    for bad, error in (
        (service.create_schedule("noop", every=60, id=generated.id), ScheduleExists),
        (service.create_schedule("noop", every=0.1), InvalidSchedule),
        (service.create_schedule("noop", cron="* * * * *", every=1), InvalidSchedule),
        (service.create_schedule("noop", cron="* * * * *", tz="Nowhere"), InvalidSchedule),
        (service.create_schedule("noop", every=60, id="no spaces"), InvalidSchedule),
        (service.create_schedule("bounded", every=60, params={"count": 0}), InvalidParams),
        (service.create_schedule("nope", every=60), UnknownTaskType),
        (service.update_schedule("purge_tasks", every=60), ScheduleInCode),
        (service.delete_schedule("purge_tasks"), ScheduleInCode),
        (service.update_schedule("missing", every=60), ScheduleNotFound),
    ):
        with pytest.raises(error):
            await bad
    assert json.dumps(generated.to_json())  # JSON-ready
