"""Every SQL statement of the service for PostgreSQL, through asyncpg: many hosts, one database.

The same verbs as the SQLite store (see `store.Store`), so nothing above knows which it has.
What differs is how the hosts meet:

- claims take rows `FOR UPDATE SKIP LOCKED`, so runners on many hosts never wait on each
  other nor take the same task;
- a trigger NOTIFYs when work appears (a pending task) or a cancel is asked of a running one,
  so an idle runner on another host wakes at once and a cancel reaches the task's host at
  once; the lease sweep stays the safety net;
- schema migrations run under an advisory lock, so hosts starting together migrate once;
- a schedule's tick is inserted under a per-schedule advisory lock and keyed by its fire
  time, so it fires once across all hosts;
- lease times come from the database's clock, so hosts' clocks need not agree;
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

from group_commit import GroupCommitter, Write
from models import (
    MAX_INTERRUPTIONS,
    TERMINAL_STATUSES,
    NewTask,
    StoreUnavailable,
    Task,
)
from store import (
    INTERRUPTED_ERROR,
    FileRecord,
    GroupCommittedStore,
    StoreOpenError,
    TaskEvent,
    WorkerInfo,
    event_from_row,
    new_task_row,
    task_from_row,
)

log = logging.getLogger("tasks.store")

CHANNEL = "tasks_changed"
_MIGRATION_LOCK = 7_401_525_003  # an arbitrary advisory lock key of our own
_CONNECT_TIMEOUT = 5.0
_OPEN_RETRY_FOR = 30.0  # hosts may start before the database does
_POOL_SIZE = 10
# An event's position: its transaction id and sequence number in one ordered integer.
_POSITION_SHIFT = 40

_EVENT_FIELDS = (
    "task_id, status, progress, message, result, error, attempts, run_at, started_at, "
    "finished_at, cancel_requested"
)

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
        f"""CREATE FUNCTION tasks_record_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO task_events ({_EVENT_FIELDS}) VALUES (NEW.id, NEW.status,
                NEW.progress, NEW.message, NEW.result, NEW.error, NEW.attempts, NEW.run_at,
                NEW.started_at, NEW.finished_at, NEW.cancel_requested);
            -- Wake the other hosts when there is work, or a running task is to stop. The
            -- payload names the sender, so it can ignore its own news; repeats within one
            -- transaction are delivered once.
            IF NEW.status = 'pending' OR (NEW.status = 'running' AND NEW.cancel_requested) THEN
                PERFORM pg_notify('{CHANNEL}', current_setting('application_name'));
            END IF;
            RETURN NULL;
        END $$""",
        "CREATE TRIGGER tasks_inserted AFTER INSERT ON tasks "
        "FOR EACH ROW EXECUTE FUNCTION tasks_record_change()",
        f"CREATE TRIGGER tasks_changed AFTER UPDATE OF {_EVENT_FIELDS[9:]} ON tasks "
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
]

# The guards of a one-row write by id, written so that no index can serve them: with
# `status = 'running'` the planner, misled by a young table's statistics, walks a partial index
# on status (every dead row version of every running task) instead of the primary key, and a
# final write slowed from ~50 us to ~2 ms as the table grew (bench/throughput.py, 40 s runs).
# Neither side is ever NULL, so the meaning is plain equality.
_STILL = "status IS NOT DISTINCT FROM"
_OWNED_BY = "owner IS NOT DISTINCT FROM"

_COLUMNS = (
    "id, name, params, status, progress, message, result, error, attempts, max_attempts, "
    "priority, created_at, run_at, started_at, finished_at, cancel_requested, schedule_id, "
    "timeout, owner, interruptions, released"
)
_INSERT = (
    "INSERT INTO tasks (id, name, params, status, attempts, max_attempts, priority, created_at, "
    "run_at, started_at, schedule_id, timeout, owner, unique_key, request_hash) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
)
_ON_KEY_TAKEN = " ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING RETURNING id"
_INSERT_UNIQUE = _INSERT + _ON_KEY_TAKEN
# A schedule's tick: once per tick, never while an earlier run is active or it is paused.
_INSERT_TICK = (
    _INSERT.split(" VALUES ")[0]
    + " SELECT $1::text, $2::text, $3::text, $4::text, $5::int, $6::int, $7::int, $8::float8, "
    "$9::float8, $10::float8, $11::text, $12::float8, $13::text, $14::text, $15::text "
    "WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE schedule_id = $11 "
    "AND status IN ('pending', 'running') AND schedule_id IS NOT NULL) "
    "AND NOT EXISTS (SELECT 1 FROM schedules WHERE id = $11 AND paused)" + _ON_KEY_TAKEN
)
_RECORD_TICK = (
    "INSERT INTO schedules (id, last_fire_at) VALUES ($1, $2) ON CONFLICT (id) "
    "DO UPDATE SET last_fire_at = "
    "greatest(coalesce(schedules.last_fire_at, 0), excluded.last_fire_at)"
)
_CLAIM = (
    "UPDATE tasks SET status = 'running', owner = $1, attempts = attempts + 1, started_at = $2 "
    "WHERE id IN (SELECT id FROM tasks WHERE status = 'pending' AND run_at <= $3 "
    "ORDER BY priority DESC, run_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) "
    f"RETURNING {_COLUMNS}"
)
# A cancel stored before this write wins over how the attempt ended (see store._FINISH).
_FINISH = (
    "UPDATE tasks SET "
    "status = CASE WHEN cancel_requested THEN 'cancelled' ELSE $1::text END, "
    "result = CASE WHEN cancel_requested THEN NULL ELSE $2::text END, "
    "error = CASE WHEN cancel_requested THEN NULL ELSE $3::text END, "
    "finished_at = CASE WHEN cancel_requested THEN $4::float8 ELSE $5::float8 END, "
    "run_at = CASE WHEN cancel_requested THEN run_at ELSE coalesce($6::float8, run_at) END "
    f"WHERE id = $7 AND {_OWNED_BY} $8 AND {_STILL} 'running'"
)
_PROGRESS = f"UPDATE tasks SET progress = $1, message = $2 WHERE id = $3 AND {_STILL} 'running'"
_RELEASE = (
    "UPDATE tasks SET released = released + 1, "
    "status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'pending' END, "
    "finished_at = CASE WHEN cancel_requested THEN $1::float8 END "
    f"WHERE id = $2 AND {_OWNED_BY} $3 AND {_STILL} 'running'"
)
_RECOVER = (
    "UPDATE tasks SET interruptions = interruptions + 1, "
    "status = CASE WHEN cancel_requested THEN 'cancelled' "
    f"  WHEN interruptions + 1 >= {MAX_INTERRUPTIONS} THEN 'failed' ELSE 'pending' END, "
    "error = CASE WHEN cancel_requested THEN error "
    f"  WHEN interruptions + 1 >= {MAX_INTERRUPTIONS} THEN $1::text ELSE error END, "
    "finished_at = CASE WHEN cancel_requested "
    f"  OR interruptions + 1 >= {MAX_INTERRUPTIONS} THEN $2::float8 END, "
    "run_at = $2::float8 "
    f"WHERE owner = $3 AND status = 'running' RETURNING {_COLUMNS}"
)
_NOW = "extract(epoch FROM clock_timestamp())::float8"
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


class PostgresStore(GroupCommittedStore):
    """The PostgreSQL store: a connection pool, a group committer, and one listener."""

    _INSERT = _INSERT
    _INSERT_UNIQUE = _INSERT_UNIQUE
    _BY_UNIQUE_KEY = f"SELECT {_COLUMNS}, request_hash FROM tasks WHERE unique_key = $1"
    _CLAIM = _CLAIM
    _FINISH = _FINISH

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
        self._committer = GroupCommitter(
            self._run_batch,
            errors=_DATABASE_ERRORS,
            diagnose=_diagnose,
            progress_sql=_PROGRESS,
            name="pg-store-group-commit",
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

    async def ping(self) -> None:
        await self._read("SELECT 1")

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
            if len(batch) == 1 and len(batch[0].params) == 1:
                return [await self._run_write(conn, batch[0])]
            async with conn.transaction():
                return [await self._run_write(conn, write) for write in batch]

    @staticmethod
    async def _run_write(conn: asyncpg.Connection, write: Write) -> Any:
        if write.returning:
            return await conn.fetch(write.sql, *write.params[0])
        if len(write.params) == 1:
            await conn.execute(write.sql, *write.params[0])
        else:
            await conn.executemany(write.sql, write.params)
        return None

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        try:
            async with self._connection() as conn:
                return list(await conn.fetch(sql, *params))
        except _DATABASE_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def _transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[Any]:
        """Statements in one transaction of their own, outside the group commit."""
        try:
            async with self._connection() as conn, conn.transaction():
                return [await conn.fetch(sql, *params) for sql, params in statements]
        except _DATABASE_ERRORS as exc:
            raise _unavailable(exc) from exc

    # -- tasks -----------------------------------------------------------------------------

    async def create_tick(
        self, new: NewTask, *, claim_for: str | None = None
    ) -> tuple[Task | None, bool]:
        """Insert a schedule's run for the tick in `new.unique_key`, unless another host
        already did, an earlier run of the schedule is still pending or running, or the
        schedule is paused. Returns (task, True) or (None, False).

        Under the schedule's advisory lock: two hosts firing different ticks at once must
        not both find no active run.
        """
        assert new.schedule_id is not None and new.unique_key is not None
        task, params = new_task_row(new, claim_for)
        _, inserted, _ = await self._transaction(
            [
                ("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", (new.schedule_id,)),
                (_INSERT_TICK, params),
                (_RECORD_TICK, (new.schedule_id, task.run_at)),
            ]
        )
        return (task, True) if inserted else (None, False)

    async def schedule_states(self) -> dict[str, tuple[bool, float | None]]:
        """Each known schedule's (paused, last tick handled)."""
        rows = await self._read("SELECT id, paused, last_fire_at FROM schedules")
        return {row[0]: (bool(row[1]), row[2]) for row in rows}

    async def set_paused(self, schedule_id: str, paused: bool) -> None:
        await self._write(
            "INSERT INTO schedules (id, paused) VALUES ($1, $2) "
            "ON CONFLICT (id) DO UPDATE SET paused = excluded.paused",
            (schedule_id, paused),
        )

    async def get(self, task_id: str) -> Task | None:
        rows = await self._read(f"SELECT {_COLUMNS} FROM tasks WHERE id = $1", (task_id,))
        return task_from_row(rows[0]) if rows else None

    async def _list_one(
        self, status: str | None, name: str | None, before_id: str | None, limit: int
    ) -> list[Task]:
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("status =", status),
            ("name =", name),
            ("id <", before_id),
        ):
            if value is not None:
                params.append(value)
                where.append(f"{column} ${len(params)}")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM tasks {clause} ORDER BY id DESC LIMIT ${len(params) + 1}",
            (*params, limit),
        )
        return [task_from_row(row) for row in rows]

    async def release(self, task: Task) -> None:
        await self._write(_RELEASE, (time.time(), task.id, task.owner))

    async def unclaim(self, tasks: Sequence[Task]) -> None:
        """Give back tasks claimed but never started (the service began to stop meanwhile)."""
        await self._committer.submit_many(
            "UPDATE tasks SET status = 'pending', attempts = attempts - 1, "
            "started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END "
            f"WHERE id = $1 AND {_OWNED_BY} $2 AND {_STILL} 'running'",
            [(task.id, task.owner) for task in tasks],
        )

    async def cancel_pending(self, task_id: str) -> Task | None:
        """Cancel a task that has not started; None if it is not pending."""
        rows = await self._write_returning(
            "UPDATE tasks SET status = 'cancelled', cancel_requested = true, finished_at = $1 "
            f"WHERE id = $2 AND {_STILL} 'pending' RETURNING {_COLUMNS}",
            (time.time(), task_id),
        )
        return task_from_row(rows[0]) if rows else None

    async def request_cancel(self, task_id: str) -> Task | None:
        """Ask the host running a task to stop it (the trigger tells it); None if it is not
        running."""
        rows = await self._write_returning(
            "UPDATE tasks SET cancel_requested = true "
            f"WHERE id = $1 AND {_STILL} 'running' RETURNING {_COLUMNS}",
            (task_id,),
        )
        return task_from_row(rows[0]) if rows else None

    async def cancel_requests(self, owner: str) -> list[str]:
        rows = await self._read(
            "SELECT id FROM tasks WHERE owner = $1 AND status = 'running' AND cancel_requested",
            (owner,),
        )
        return [row[0] for row in rows]

    async def running_for(self, owner: str) -> list[Task]:
        """The tasks stored as running for `owner`."""
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM tasks WHERE owner = $1 AND status = 'running'", (owner,)
        )
        return [task_from_row(row) for row in rows]

    async def next_run_at(self) -> float | None:
        rows = await self._read("SELECT min(run_at) FROM tasks WHERE status = 'pending'")
        value: float | None = rows[0][0]
        return value

    async def has_due(self) -> bool:
        rows = await self._read(
            "SELECT 1 FROM tasks WHERE status = 'pending' AND run_at <= $1 LIMIT 1", (time.time(),)
        )
        return bool(rows)

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

    # -- workers ---------------------------------------------------------------------------

    async def register_worker(self, worker: WorkerInfo) -> None:
        await self._write(
            "INSERT INTO workers (id, host, pid, pid_started, seen_at) "
            f"VALUES ($1, $2, $3, $4, {_NOW}) ON CONFLICT (id) DO UPDATE SET "
            "host = excluded.host, pid = excluded.pid, pid_started = excluded.pid_started, "
            "seen_at = excluded.seen_at",
            (worker.id, worker.host, worker.pid, worker.pid_started),
        )

    async def heartbeat(self, worker_id: str) -> bool:
        """Say this worker lives; False if others already took it for dead."""
        rows = await self._write_returning(
            f"UPDATE workers SET seen_at = {_NOW} WHERE id = $1 RETURNING id", (worker_id,)
        )
        return bool(rows)

    async def workers(self) -> list[WorkerInfo]:
        """The workers, their `seen_at` moved onto this host's clock: leases are measured
        by the database's clock, whatever the hosts' clocks say."""
        rows = await self._read(f"SELECT id, host, pid, pid_started, seen_at, {_NOW} FROM workers")
        skew = time.time() - rows[0][5] if rows else 0.0
        return [WorkerInfo(row[0], row[1], row[2], row[3], row[4] + skew) for row in rows]

    async def recover(self, worker_id: str) -> list[Task]:
        """Put a dead worker's running tasks back to pending (or give up on them)."""
        rows = await self._write_returning(_RECOVER, (INTERRUPTED_ERROR, time.time(), worker_id))
        return [task_from_row(row) for row in rows]

    async def remove_worker(self, worker_id: str) -> None:
        await self._write("DELETE FROM workers WHERE id = $1", (worker_id,))

    async def orphan_owners(self) -> list[str]:
        """Owners of running tasks that are not registered workers (they died unregistered)."""
        rows = await self._read(
            "SELECT DISTINCT owner FROM tasks WHERE status = 'running' "
            "AND NOT EXISTS (SELECT 1 FROM workers WHERE workers.id = tasks.owner)"
        )
        return [row[0] for row in rows]

    # -- uploaded files --------------------------------------------------------------------

    async def add_file(self, record: FileRecord) -> None:
        await self._write(
            "INSERT INTO files (id, filename, size, sha256, created_at) "
            "VALUES ($1, $2, $3, $4, $5)",
            (record.id, record.filename, record.size, record.sha256, record.created_at),
        )

    async def get_file(self, file_id: str) -> FileRecord | None:
        rows = await self._read(
            "SELECT id, filename, size, sha256, created_at FROM files WHERE id = $1", (file_id,)
        )
        return FileRecord(*rows[0]) if rows else None

    async def files_created_before(self, cutoff: float) -> list[str]:
        rows = await self._read("SELECT id FROM files WHERE created_at < $1", (cutoff,))
        return [row[0] for row in rows]

    async def forget_file_unless_in_use(self, file_id: str) -> bool:
        """Delete a file's record unless a pending or running task names it in its params."""
        rows = await self._write_returning(
            "DELETE FROM files WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM tasks "
            "WHERE status IN ('pending', 'running') AND strpos(params, $2) > 0) RETURNING id",
            (file_id, f'"{file_id}"'),
        )
        return bool(rows)

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
            f"SELECT tx::text::bigint, seq, {_EVENT_FIELDS} FROM task_events "
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

    # -- metrics ---------------------------------------------------------------------------

    async def task_counts(self) -> list[tuple[str, str, int]]:
        """(status, name, count) of the tasks in the store."""
        rows = await self._read("SELECT status, name, count(*) FROM tasks GROUP BY status, name")
        return [(row[0], row[1], row[2]) for row in rows]

    async def queue_stats(self) -> tuple[int, float | None]:
        """How many pending tasks are due now, and since when the oldest has waited."""
        rows = await self._read(
            "SELECT count(*), min(run_at) FROM tasks WHERE status = 'pending' AND run_at <= $1",
            (time.time(),),
        )
        return rows[0][0], rows[0][1]

    async def add_metric_counts(self, deltas: dict[tuple[str, str, str], float]) -> None:
        await self._committer.submit_many(
            "INSERT INTO metric_counts (metric, name, label, value) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (metric, name, label) "
            "DO UPDATE SET value = metric_counts.value + excluded.value",
            [(*key, float(value)) for key, value in deltas.items()],
        )

    async def metric_counts(self) -> list[tuple[str, str, str, float]]:
        rows = await self._read("SELECT metric, name, label, value FROM metric_counts")
        return [(row[0], row[1], row[2], row[3]) for row in rows]

    # -- maintenance -----------------------------------------------------------------------

    async def purge(self, older_than: float, *, chunk: int = 1000) -> int:
        """Delete terminal tasks finished before `older_than`, in short transactions."""
        statuses = [s.value for s in TERMINAL_STATUSES]
        deleted = 0
        while True:
            rows = await self._write_returning(
                "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks WHERE finished_at < $1 "
                "AND status = ANY($2::text[]) LIMIT $3) RETURNING id",
                (older_than, statuses, chunk),
            )
            deleted += len(rows)
            if len(rows) < chunk:
                return deleted
