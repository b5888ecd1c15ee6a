"""What only the PostgreSQL store has to get right: many hosts opening and migrating at once,
NOTIFY wake-ups, event order across concurrent transactions, and losing the database."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

import tasks_service.engines.postgres as pg_store
from store import StoreOpenError
from tasks_service.engines.postgres import PostgresStore
from tasks_service.models import NewTask, StoreUnavailable, TaskStatus
from tests.harness import eventually
from tests.helpers import AppFactory
from tests.postgres import PostgresServer

pytestmark = pytest.mark.anyio


def new() -> NewTask:
    return NewTask(name="noop", params={})


@pytest.fixture
async def store(pg_url: str) -> AsyncIterator[PostgresStore]:
    db = PostgresStore(pg_url)
    await db.open()
    yield db
    await db.close()


async def test_hosts_starting_together_migrate_once(pg_url: str) -> None:
    stores = [PostgresStore(pg_url) for _ in range(6)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        conn = await asyncpg.connect(pg_url)
        versions = await conn.fetch("SELECT version FROM tasks_schema ORDER BY version")
        await conn.close()
        assert [row[0] for row in versions] == list(range(1, len(pg_store.MIGRATIONS) + 1))
        task, _ = await stores[0].create(new())
        assert (await stores[5].get(task.id)) == task  # one schema, shared
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_a_newer_schema_refuses_to_open_and_says_to_upgrade(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_url)
    await conn.execute("CREATE TABLE tasks_schema (version integer NOT NULL)")
    await conn.execute("INSERT INTO tasks_schema VALUES (99)")
    await conn.close()
    with pytest.raises(StoreOpenError, match=r"newer than this service knows.*upgrade"):
        await PostgresStore(pg_url).open()


async def test_a_missing_database_is_refused_at_once_with_its_name(
    postgres: PostgresServer,
) -> None:
    started = time.monotonic()
    with pytest.raises(StoreOpenError, match="no_such_db"):
        await PostgresStore(postgres.url("no_such_db")).open()
    assert time.monotonic() - started < 10  # not retried: waiting would not create it


async def test_an_unreachable_server_is_waited_for_then_refused_without_the_password() -> None:
    url = "postgresql://app:s3cret@127.0.0.1:1/tasks"  # nothing listens on port 1
    with pytest.raises(StoreOpenError, match="cannot reach") as raised:
        await PostgresStore(url, open_timeout=1).open()
    assert "s3cret" not in str(raised.value)


async def test_another_hosts_enqueue_wakes_a_waiting_host_at_once(
    store: PostgresStore, pg_url: str
) -> None:
    other = PostgresStore(pg_url)
    await other.open()
    try:
        await store.changed()  # the baseline

        async def enqueue_soon() -> None:
            await asyncio.sleep(0.2)
            await other.create(new())

        started = time.monotonic()
        await asyncio.gather(store.wait_for_change(30), enqueue_soon())
        assert time.monotonic() - started < 10  # woken by NOTIFY, not the 30 s timeout
        assert await store.changed()
    finally:
        await other.close()


async def test_a_hosts_own_writes_do_not_wake_it(store: PostgresStore) -> None:
    await store.changed()
    await store.create(new())
    await store.wait_for_change(0.3)
    assert not await store.changed()


async def test_events_never_pass_a_change_that_is_still_committing(
    store: PostgresStore, pg_url: str
) -> None:
    """A change committed later but numbered earlier must still be delivered, in order."""
    slow_task, _ = await store.create(new())
    position = await store.last_event()
    conn = await asyncpg.connect(pg_url)
    try:
        slow = conn.transaction()
        await slow.start()
        await conn.execute("UPDATE tasks SET message = 'slow' WHERE id = $1", slow_task.id)
        fast_task, _ = await store.create(new())  # commits while `slow` is open
        assert await store.events_after(position) == []  # held back, not skipped
        await slow.commit()
    finally:
        await conn.close()
    events = await store.events_after(position)
    assert [(e.task_id, e.message) for e in events] == [
        (slow_task.id, "slow"),
        (fast_task.id, None),
    ]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert await store.last_event() == events[-1].seq


async def test_losing_the_database_is_a_503_and_the_service_recovers_by_itself(
    make_app: AppFactory, postgres: PostgresServer, pg_url: str
) -> None:
    app = await make_app(db=pg_url)
    done = await app.post_task("noop")
    await app.wait_for(done["id"])
    running = await app.post_task("hang", params={"seconds": 3})
    await app.wait_for(running["id"], "running")

    postgres.kill()
    try:
        for response in (
            await app.client.get(f"/tasks/{done['id']}"),
            await app.client.get("/tasks"),
            await app.client.post("/tasks", json={"name": "noop"}),
            await app.client.post(f"/tasks/{running['id']}/cancel"),
            await app.client.get("/health"),
        ):
            assert response.status_code == 503, response.text
            assert "task database" in response.json()["detail"]
            assert response.headers["retry-after"] == "1"
        await asyncio.sleep(3.5)  # the running task ends while the database is away
    finally:
        postgres.start()

    async def healthy() -> bool:
        return (await app.client.get("/health")).status_code == 200

    await eventually(healthy, timeout=20)
    # The attempt that ended during the outage is recorded once the database is back.
    finished = await app.wait_for(running["id"], "completed", timeout=20)
    assert finished["attempts"] == 1
    after = await app.post_task("noop")
    assert (await app.wait_for(after["id"]))["status"] == TaskStatus.COMPLETED.value


async def test_a_closed_store_says_so(pg_url: str) -> None:
    db = PostgresStore(pg_url)
    await db.open()
    await db.close()
    with pytest.raises(StoreUnavailable):
        await db.get("x")
    with pytest.raises(StoreUnavailable):
        await db.create(new())


async def test_the_service_starts_on_a_postgresql_url(make_app: AppFactory, pg_url: str) -> None:
    app = await make_app(db=pg_url)
    response = await app.client.get("/health")
    assert response.status_code == 200
    assert isinstance(app.service.store, PostgresStore)
    task = await app.post_task("echo", params={"text": "hi"})
    assert (await app.wait_for(task["id"]))["result"] == {"text": "hi", "extra": None}


@pytest.mark.parametrize(
    ("statement", "params"),
    [
        (
            PostgresStore.sql.finish,
            ("completed", "1", None, 1.0, 1.0, None, "completed", "id", "w1"),
        ),
        (PostgresStore.sql.progress, (50.0, "half", "id")),
        (PostgresStore.sql.release, (1.0, "id", "w1")),
    ],
)
async def test_one_row_writes_find_their_row_by_primary_key(
    store: PostgresStore, pg_url: str, statement: str, params: tuple[object, ...]
) -> None:
    """On a young table the planner once walked a partial index on status instead, and each
    final write got slower as the table grew (~50 us to ~2 ms)."""
    for _ in range(50):
        await store.create(new(), claim_for="w1")
    conn = await asyncpg.connect(pg_url)
    try:
        plan = "\n".join(row[0] for row in await conn.fetch(f"EXPLAIN {statement}", *params))
    finally:
        await conn.close()
    assert "tasks_pkey" in plan, plan
