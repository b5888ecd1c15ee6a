"""The PostgreSQL engine, through asyncpg: many hosts, one database.

The verbs are `store.Store`'s, so nothing above knows which engine it has. What is
PostgreSQL's own is how the hosts meet:

- claims take rows `FOR UPDATE SKIP LOCKED`, so runners on many hosts never wait on each
  other nor take the same task;
- a trigger NOTIFYs when work appears (a pending task) or a cancel is asked of a running one,
  so an idle runner on another host wakes at once and a cancel reaches the task's host at
  once; the lease sweep stays the safety net;
- schema migrations run under an advisory lock, so hosts starting together migrate once;
- schedules' ticks are inserted under an advisory lock and keyed by their fire time, so
  each fires once across all hosts; the same lock hands out the revisions of schedules
  made at runtime in commit order;
- change events are ordered by (transaction, sequence) and read only from settled
  transactions, so a reader never moves past a change that has yet to commit;
- losing the connection turns into StoreUnavailable (503) while it lasts; the pool
  reconnects by itself when the database is back.

Writes go through the same group committer as SQLite's, one transaction per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg

from store import Store, StoreOpenError
from tasks_service.counted import CountedOutcome
from tasks_service.engines.group_commit import (
    EndedCounts,
    GroupCommitted,
    GroupCommitter,
    Write,
)
from tasks_service.models import Rows, StoreUnavailable, TaskEvent
from tasks_service.sql import (
    EVENT_COLUMNS,
    EVENT_FIELDS,
    Dialect,
    Statements,
    event_from_row,
)

log = logging.getLogger("tasks.store")

CHANNEL = "tasks_changed"
_MIGRATION_LOCK = 7_401_525_003  # arbitrary advisory lock keys of our own
_LIMITED_CLAIMS_LOCK = 7_401_525_004
_CONNECT_TIMEOUT = 5.0
_OPEN_RETRY_FOR = 30.0  # hosts may start before the database does
_POOL_SIZE = 10
# An event's position: its transaction id and sequence number in one ordered integer.
_POSITION_SHIFT = 40


def _record_change(create: str, also_wake_when: str = "") -> str:
    """The trigger function that records each change of a task for event streams, and wakes
    the other hosts (NOTIFY) when there is work or a running task is to stop, or when
    `also_wake_when`. The payload names the sender, so it can ignore its own news; repeats
    within one transaction are delivered once."""
    return f"""{create} FUNCTION tasks_record_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO task_events ({EVENT_FIELDS}) VALUES (NEW.id, NEW.status,
                NEW.progress, NEW.message, NEW.result, NEW.error, NEW.attempts, NEW.run_at,
                NEW.started_at, NEW.finished_at, NEW.cancel_requested);
            IF NEW.status = 'pending' OR (NEW.status = 'running' AND NEW.cancel_requested)
                {also_wake_when} THEN
                PERFORM pg_notify('{CHANNEL}', current_setting('application_name'));
            END IF;
            RETURN NULL;
        END $$"""


# SKIP LOCKED: runners on many hosts never wait on each other nor take the same task.
DIALECT = Dialect(
    numbered_params=True,
    now="extract(epoch FROM clock_timestamp())::float8",
    pins_indexes=False,
    claim_lock="FOR UPDATE SKIP LOCKED",
    least="least",
    greatest="greatest",
    lock_limited_claims=f"SELECT pg_advisory_xact_lock({_LIMITED_CLAIMS_LOCK})",
)
_COUNTED = CountedOutcome.of(DIALECT, shard="current_setting('application_name')")
_COUNTED_ROWS = _COUNTED.rows(DIALECT)

# Each entry moves the schema one version on; never edit one that has shipped.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE tasks (
            id text COLLATE "C" PRIMARY KEY,
            name text COLLATE "C" NOT NULL,
            params text NOT NULL,
            status text NOT NULL,
            progress double precision,
            message text,
            result text,
            error text,
            attempts integer NOT NULL DEFAULT 0,
            max_attempts integer NOT NULL,
            priority integer NOT NULL DEFAULT 0,
            created_at double precision NOT NULL,
            run_at double precision NOT NULL,
            started_at double precision,
            finished_at double precision,
            cancel_requested boolean NOT NULL DEFAULT false,
            schedule_id text,
            timeout double precision,
            owner text,
            interruptions integer NOT NULL DEFAULT 0,
            released integer NOT NULL DEFAULT 0,
            unique_key text,
            request_hash text
        )""",
        # The claim: due pending tasks by priority, then run_at, then age.
        "CREATE INDEX tasks_due ON tasks (priority DESC, run_at, id) WHERE status = 'pending'",
        "CREATE INDEX tasks_next_run ON tasks (run_at) WHERE status = 'pending'",
        "CREATE INDEX tasks_running ON tasks (owner) WHERE status = 'running'",
        "CREATE INDEX tasks_by_status ON tasks (status, id)",
        "CREATE INDEX tasks_by_status_name ON tasks (status, name, id)",
        "CREATE INDEX tasks_by_name ON tasks (name, id)",
        "CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL",
        "CREATE UNIQUE INDEX tasks_unique_key ON tasks (unique_key) WHERE unique_key IS NOT NULL",
        "CREATE INDEX tasks_active_by_schedule ON tasks (schedule_id) "
        "WHERE status IN ('pending', 'running') AND schedule_id IS NOT NULL",
        """CREATE TABLE workers (
            id text PRIMARY KEY,
            host text NOT NULL,
            pid integer NOT NULL,
            pid_started text NOT NULL,
            seen_at double precision NOT NULL
        )""",
        """CREATE TABLE schedules (
            id text PRIMARY KEY,
            paused boolean NOT NULL DEFAULT false,
            last_fire_at double precision
        )""",
        """CREATE TABLE files (
            id text PRIMARY KEY,
            filename text NOT NULL,
            size bigint NOT NULL,
            sha256 text NOT NULL,
            created_at double precision NOT NULL
        )""",
        "CREATE INDEX files_by_age ON files (created_at)",
        # Every change of a task, whichever host made it: what event streams replay. Read in
        # (transaction, seq) order, and only from transactions older than every one still
        # running, so a reader never moves past a change that has yet to commit.
        """CREATE TABLE task_events (
            seq bigserial,
            tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
            task_id text NOT NULL,
            status text NOT NULL,
            progress double precision,
            message text,
            result text,
            error text,
            attempts integer NOT NULL,
            run_at double precision,
            started_at double precision,
            finished_at double precision,
            cancel_requested boolean NOT NULL,
            PRIMARY KEY (tx, seq)
        )""",
        _record_change("CREATE"),
        "CREATE TRIGGER tasks_inserted AFTER INSERT ON tasks "
        "FOR EACH ROW EXECUTE FUNCTION tasks_record_change()",
        f"CREATE TRIGGER tasks_changed AFTER UPDATE OF {EVENT_COLUMNS} ON tasks "
        "FOR EACH ROW EXECUTE FUNCTION tasks_record_change()",
        # Counters every host adds to: they survive restarts and purges, unlike tasks.
        """CREATE TABLE metric_counts (
            metric text NOT NULL,
            name text NOT NULL,
            label text NOT NULL,
            value double precision NOT NULL,
            PRIMARY KEY (metric, name, label)
        )""",
    ],
    [
        # Lanes: plain tasks are claimed from one index, the others by lane (see sql.claim).
        "ALTER TABLE tasks ADD COLUMN lane text",
        "DROP INDEX tasks_due",
        "CREATE INDEX tasks_due ON tasks (priority DESC, run_at, id) "
        "WHERE status = 'pending' AND lane IS NULL",
        "CREATE INDEX tasks_lane_due ON tasks (lane, priority DESC, run_at, id) "
        "WHERE status = 'pending' AND lane IS NOT NULL",
    ],
    [
        # Limits and pauses (see tasks_service.claims): each type's declaration as its
        # hosts last stated it, the lanes that have waited, and recent starts.
        """CREATE TABLE task_types (
            name text COLLATE "C" PRIMARY KEY,
            process boolean NOT NULL DEFAULT false,
            concurrency integer,
            rate_count integer,
            rate_period double precision,
            limit_key text,
            paused boolean NOT NULL DEFAULT false
        )""",
        """CREATE TABLE lanes (
            lane text COLLATE "C" PRIMARY KEY,
            name text COLLATE "C" NOT NULL,
            touched_at double precision NOT NULL
        )""",
        "CREATE INDEX lanes_by_name ON lanes (name)",
        """CREATE TABLE lane_starts (
            lane text COLLATE "C" NOT NULL,
            name text COLLATE "C" NOT NULL,
            started_at double precision NOT NULL
        )""",
        "CREATE INDEX lane_starts_by_lane ON lane_starts (lane, started_at)",
        "CREATE INDEX lane_starts_by_age ON lane_starts (started_at)",
        "CREATE INDEX tasks_lane_running ON tasks (lane) "
        "WHERE status = 'running' AND lane IS NOT NULL",
        """CREATE FUNCTION tasks_lane_seen() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO lanes (lane, name, touched_at)
                VALUES (NEW.lane, NEW.name, extract(epoch FROM clock_timestamp()))
                ON CONFLICT (lane) DO UPDATE SET touched_at = excluded.touched_at;
            RETURN NULL;
        END $$""",
        "CREATE TRIGGER tasks_lane_seen AFTER INSERT OR UPDATE OF lane ON tasks FOR EACH ROW "
        "WHEN (NEW.lane IS NOT NULL) EXECUTE FUNCTION tasks_lane_seen()",
        """CREATE FUNCTION tasks_lane_started() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO lane_starts (lane, name, started_at) SELECT NEW.lane, NEW.name,
                NEW.started_at WHERE EXISTS (SELECT 1 FROM task_types
                WHERE name = NEW.name AND rate_count IS NOT NULL);
            RETURN NULL;
        END $$""",
        "CREATE TRIGGER tasks_lane_started AFTER UPDATE OF started_at ON tasks FOR EACH ROW "
        "WHEN (NEW.status = 'running' AND NEW.lane IS NOT NULL) "
        "EXECUTE FUNCTION tasks_lane_started()",
    ],
    [
        # Workflows: a child knows its parent (ctx.run, map, start). The hosts are woken
        # when a laned task or a child ends too: its lane may let the next one start, its
        # parent may be waiting for it.
        'ALTER TABLE tasks ADD COLUMN parent_id text COLLATE "C"',
        "CREATE INDEX tasks_by_parent ON tasks (parent_id, id) WHERE parent_id IS NOT NULL",
        _record_change(
            "CREATE OR REPLACE",
            "OR ((NEW.lane IS NOT NULL OR NEW.parent_id IS NOT NULL) "
            "AND NEW.status IN ('completed', 'failed', 'cancelled'))",
        ),
    ],
    [
        # Schedules made at runtime live beside the state of those in code (source NULL).
        # `revision` numbers every change of one in commit order: each process reads what
        # changed since it last looked. A deleted one stays as a tombstone (`deleted`).
        "ALTER TABLE schedules ADD COLUMN source text",
        "ALTER TABLE schedules ADD COLUMN task text",
        "ALTER TABLE schedules ADD COLUMN params text",
        "ALTER TABLE schedules ADD COLUMN every_seconds double precision",
        "ALTER TABLE schedules ADD COLUMN cron text",
        "ALTER TABLE schedules ADD COLUMN tz text",
        "ALTER TABLE schedules ADD COLUMN deleted boolean NOT NULL DEFAULT false",
        "ALTER TABLE schedules ADD COLUMN revision bigint NOT NULL DEFAULT 0",
        "ALTER TABLE schedules ADD COLUMN trigger_set_at double precision",
        "ALTER TABLE schedules ADD COLUMN last_run_at double precision",
        "ALTER TABLE schedules ADD COLUMN last_task_id text",
        "CREATE INDEX schedules_by_revision ON schedules (revision)",
        # A schedule's recent runs (GET /tasks?schedule_id=).
        "CREATE INDEX tasks_by_schedule ON tasks (schedule_id, id) WHERE schedule_id IS NOT NULL",
    ],
    [
        # The last hours at a glance (runtime.stats): the attempts that ended in each minute,
        # by type, outcome and duration, counted in the transactions that end them (see
        # counted.CountedOutcome); the queue depth, sampled by the watchers. Each process adds
        # to rows of its own (`shard`: its connections' name), so that two hosts'
        # transactions never wait for each other's row locks; readers sum them.
        "ALTER TABLE tasks ADD COLUMN ended_as text",
        """CREATE TABLE stats_minutes (
            minute bigint NOT NULL,
            name text COLLATE "C" NOT NULL,
            outcome text NOT NULL,
            bucket integer NOT NULL,
            shard text NOT NULL,
            n bigint NOT NULL,
            PRIMARY KEY (minute, name, outcome, bucket, shard)
        )""",
        """CREATE TABLE stats_depth (
            minute bigint PRIMARY KEY,
            depth bigint NOT NULL,
            sampled_at double precision NOT NULL
        )""",
        # PostgreSQL reads a trigger's WHEN again for each execution of a statement (each
        # row of an executemany): kept to one column there, the rest is tested inside.
        f"""CREATE FUNCTION tasks_count_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_NAME = 'tasks_given_up' OR ({_COUNTED.cancelled_ends}) THEN
                {_COUNTED_ROWS[0]};
                {_COUNTED_ROWS[1]};
            END IF;
            RETURN NULL;
        END $$""",
        "CREATE TRIGGER tasks_counted AFTER UPDATE OF finished_at ON tasks FOR EACH ROW "
        "WHEN (NEW.cancel_requested) EXECUTE FUNCTION tasks_count_outcome()",
        "CREATE TRIGGER tasks_given_up AFTER UPDATE OF interruptions ON tasks FOR EACH ROW "
        f"WHEN ({_COUNTED.given_up_when}) EXECUTE FUNCTION tasks_count_outcome()",
    ],
]

# Two hosts firing different ticks of one schedule at once must not both find no active
# run, nor two changes of schedules take the same revision: the second waits for the first's
# commit.
STATEMENTS = Statements(
    DIALECT, lock_schedule="SELECT pg_advisory_xact_lock(hashtextextended(?, 0))"
)
# Events only from transactions older than any still running: those can never be joined
# by an earlier one.
_SETTLED = "tx < pg_snapshot_xmin(pg_current_snapshot())"

_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    # A pool connection the server ended under us can say "cannot switch to state ...;
    # another operation is in progress" (asyncpg #784, #1069): a plain Exception subclass.
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)


def _connection_problem(exc: BaseException) -> bool:
    """The database is away (not a problem with one statement): retrying rows is no use."""
    return isinstance(
        exc,
        (
            OSError,
            TimeoutError,
            asyncpg.InterfaceError,  # connection closed under us, among others
            asyncpg.exceptions.InternalClientError,
            asyncpg.PostgresConnectionError,
            asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, starting up
            asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
        ),
    )


def _unavailable(exc: BaseException) -> StoreUnavailable:
    detail = str(exc) or type(exc).__name__
    return StoreUnavailable(f"the task database cannot be reached: {detail}")


def _diagnose(exc: BaseException) -> StoreUnavailable | None:
    return _unavailable(exc) if _connection_problem(exc) else None


def _position(tx: int, seq: int) -> int:
    return (tx << _POSITION_SHIFT) | seq


def _split_position(position: int) -> tuple[str, int]:
    return str(position >> _POSITION_SHIFT), position & ((1 << _POSITION_SHIFT) - 1)


class PostgresStore(GroupCommitted, Store):
    """The PostgreSQL store: a connection pool, a group committer, and one listener."""

    sql = STATEMENTS

    def __init__(
        self, url: str, *, pool_size: int = _POOL_SIZE, open_timeout: float = _OPEN_RETRY_FOR
    ) -> None:
        """`open_timeout`: how long open() waits for an unreachable database to appear."""
        self.url = url
        self._pool_size = pool_size
        self._open_timeout = open_timeout
        # Our connections' name: the trigger's NOTIFY payload, so our own news is ignored.
        self.name = f"tasks-{secrets.token_hex(6)}"
        self._pool: asyncpg.Pool | None = None
        self._listener: asyncpg.Connection | None = None
        self._notified = asyncio.Event()
        self._notified.set()  # the first look always looks
        # Each process counts into rows of its own: hosts never wait on each other's locks.
        self._ended = EndedCounts(self.sql.add_ended, shard=self.name)
        self._committer = GroupCommitter(
            self._run_batch,
            errors=_DATABASE_ERRORS,
            diagnose=_diagnose,
            key_taken=lambda exc: isinstance(exc, asyncpg.UniqueViolationError),
            progress_sql=self.sql.progress,
            name="pg-store-group-commit",
            ended=self._ended,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        deadline = time.monotonic() + self._open_timeout
        while True:
            try:
                self._pool = await asyncpg.create_pool(
                    self.url,
                    min_size=1,
                    max_size=self._pool_size,
                    timeout=_CONNECT_TIMEOUT,
                    server_settings={"application_name": self.name},
                )
                break
            except (
                asyncpg.InvalidCatalogNameError,
                asyncpg.InvalidAuthorizationSpecificationError,
                asyncpg.InvalidPasswordError,
                ValueError,
            ) as exc:
                raise StoreOpenError(
                    f"cannot use {self._safe_url()} as the task database: {exc}"
                ) from exc
            except _DATABASE_ERRORS as exc:
                if time.monotonic() > deadline:
                    raise StoreOpenError(
                        f"cannot reach the task database {self._safe_url()}: {exc}"
                    ) from exc
                log.warning("the task database is not reachable yet (%s); retrying", exc)
                await asyncio.sleep(0.5)
        try:
            await self._migrate()
            await self._listen()
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise
        self._committer.start()

    async def close(self) -> None:
        """Commit everything already asked for, then close."""
        await self._committer.close()
        if self._listener is not None:
            with contextlib.suppress(*_DATABASE_ERRORS):
                await self._listener.close(timeout=2)
            self._listener = None
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 5)
            except TimeoutError:
                self._pool.terminate()
            self._pool = None

    def _safe_url(self) -> str:
        """The URL without its password, for messages."""
        scheme, _, rest = self.url.partition("://")
        userinfo, at, place = rest.rpartition("@")
        return f"{scheme}://{userinfo.split(':')[0]}{at}{place}" if at else self.url

    async def _migrate(self) -> None:
        """Create or upgrade the schema, one host at a time (the others wait, then see it)."""
        assert self._pool is not None
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS tasks_schema (version integer NOT NULL)")
            version = await conn.fetchval("SELECT max(version) FROM tasks_schema") or 0
            if version > len(MIGRATIONS):
                raise StoreOpenError(
                    f"the task database has schema version {version}, newer than this service "
                    f"knows ({len(MIGRATIONS)}): upgrade the service"
                )
            for number in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[number]:
                    await conn.execute(statement)
                await conn.execute("INSERT INTO tasks_schema (version) VALUES ($1)", number + 1)
                log.info("task database migrated to schema version %d", number + 1)

    async def _listen(self) -> None:
        """One connection of its own that LISTENs; gone, it is replaced at the next look."""
        self._listener = await asyncpg.connect(
            self.url,
            timeout=_CONNECT_TIMEOUT,
            server_settings={"application_name": f"{self.name}-listener"},
        )
        self._listener.add_termination_listener(self._listener_lost)
        await self._listener.add_listener(CHANNEL, self._on_notify)

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if payload != self.name:
            self._notified.set()

    def _listener_lost(self, conn: Any) -> None:
        self._notified.set()  # notifications may have been missed: look

    # -- the group committer ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pool connection; one that failed as a connection is thrown away, never reused
        (asyncpg would otherwise hand the broken one out again)."""
        if self._pool is None:
            raise StoreUnavailable("the task store is closed")
        conn = await self._pool.acquire(timeout=_CONNECT_TIMEOUT)
        try:
            yield conn
        except BaseException as exc:
            if _connection_problem(exc) or isinstance(exc, asyncio.CancelledError):
                conn.terminate()
            raise
        finally:
            await self._pool.release(conn)

    async def _run_batch(self, batch: list[Write]) -> list[Any]:
        async with self._connection() as conn:
            if len(batch) == 1 and batch[0].alone:
                return [await self._run_write(conn, batch[0])]
            async with conn.transaction():
                return [await self._run_write(conn, write) for write in batch]

    @staticmethod
    async def _run_write(conn: asyncpg.Connection, write: Write) -> Any:
        if write.steps is not None:
            results = []
            for sql, params in write.steps:
                if isinstance(params, Rows):
                    await conn.executemany(sql, params)
                    results.append([])
                else:
                    results.append(await conn.fetch(sql, *params))
            return results
        if write.returning:
            return await conn.fetch(write.sql, *write.params[0])
        if len(write.params) == 1:
            await conn.execute(write.sql, *write.params[0])
        else:
            await conn.executemany(write.sql, write.params)
        return None

    async def _read(self, sql: str, params: Sequence[Any] = (), *, scan: bool = False) -> list[Any]:
        try:
            async with self._connection() as conn:
                return list(await conn.fetch(sql, *params))
        except _DATABASE_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def changed(self) -> bool:
        """True when another host may have committed work or a cancel since the last call.

        Told by NOTIFY; without a listener (the database went away) every look is a change,
        until a new listener is in place."""
        if self._listener is None or self._listener.is_closed():
            self._listener = None
            # Cleared first: while the database is away, the watcher then waits its interval
            # between attempts instead of spinning on refused connections.
            self._notified.clear()
            try:
                await self._listen()
            except _DATABASE_ERRORS as exc:
                raise _unavailable(exc) from exc
            return True
        changed = self._notified.is_set()
        self._notified.clear()
        return changed

    async def wait_for_change(self, timeout: float) -> None:
        """Until another host tells of a change, or `timeout` s."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._notified.wait(), timeout)

    # -- change events ---------------------------------------------------------------------

    async def last_event(self) -> int:
        rows = await self._read(
            f"SELECT tx::text::bigint, seq FROM task_events WHERE {_SETTLED} "
            "ORDER BY tx DESC, seq DESC LIMIT 1"
        )
        return _position(rows[0][0], rows[0][1]) if rows else 0

    async def events_after(self, seq: int, limit: int = 1000) -> list[TaskEvent]:
        """Task changes after position `seq`, oldest first, from settled transactions only."""
        tx, number = _split_position(seq)
        rows = await self._read(
            f"SELECT tx::text::bigint, seq, {EVENT_FIELDS} FROM task_events "
            f"WHERE {_SETTLED} AND (tx, seq) > ($1::text::xid8, $2) "
            "ORDER BY tx, seq LIMIT $3",
            (tx, number, limit),
        )
        return [event_from_row((_position(row[0], row[1]), *row[2:])) for row in rows]

    async def prune_events(self, up_to_seq: int) -> None:
        tx, number = _split_position(up_to_seq)
        await self._write(
            "DELETE FROM task_events WHERE (tx, seq) <= ($1::text::xid8, $2)", (tx, number)
        )
