"""The SQLite engine: one file, shared by the processes of `--workers N`.

Writes go through one writer connection (sqlite_writer: a whole transaction per trip to its
thread) and are group-committed: whatever was asked for while the previous transaction
committed goes into the next one, so a thousand tasks cost a few transactions, not a
thousand. A caller's write is acknowledged only once its transaction is committed. Reads use
aiosqlite connections of their own and never wait for the writer (WAL).

What is SQLite's own: `INDEXED BY` pins the claim to its index, `PRAGMA data_version` tells
of other processes' commits (SQLite tells no one), change events are numbered by an
AUTOINCREMENT key in commit order, and the file lock (`tasks.db.lock`) orders the processes'
writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import aiosqlite

from store import Store, StoreOpenError
from tasks_service.counted import CountedOutcome
from tasks_service.engines.group_commit import (
    EndedCounts,
    GroupCommitted,
    GroupCommitter,
    Write,
)
from tasks_service.engines.sqlite_writer import SqliteWriter
from tasks_service.models import Rows, StoreUnavailable, TaskEvent
from tasks_service.sql import (
    EVENT_COLUMNS,
    EVENT_FIELDS,
    Dialect,
    Statements,
    event_from_row,
)

log = logging.getLogger("tasks.store")

_NEW_EVENT_VALUES = ", ".join(f"NEW.{c}" for c in ("id", *EVENT_COLUMNS.split(", ")))

# A lane that has a task waiting is listed, so that a claim finds the lanes of keyed limits.
_LANE_SEEN = (
    "INSERT INTO lanes (lane, name, touched_at) VALUES (NEW.lane, NEW.name, "
    "(julianday('now') - 2440587.5) * 86400.0) "
    "ON CONFLICT (lane) DO UPDATE SET touched_at = excluded.touched_at;"
)

# INDEXED BY: left to itself, the planner walks (status, name) and sorts every pending task.
DIALECT = Dialect(
    numbered_params=False,
    now="((julianday('now') - 2440587.5) * 86400.0)",
    pins_indexes=True,
    claim_lock="",
    least="min",
    greatest="max",
    lock_limited_claims=None,
)
_COUNTED = CountedOutcome.of(DIALECT, shard="''")
_COUNTED_ROWS = _COUNTED.rows(DIALECT)

# Each entry moves the schema one version on; never edit one that has shipped.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            params TEXT NOT NULL,
            status TEXT NOT NULL,
            progress REAL,
            message TEXT,
            result TEXT,
            error TEXT,
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            priority INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL,
            run_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            schedule_id TEXT,
            timeout REAL,
            owner TEXT,
            interruptions INTEGER NOT NULL DEFAULT 0,
            released INTEGER NOT NULL DEFAULT 0,
            unique_key TEXT,
            request_hash TEXT
        )""",
        # The claim: due pending tasks by priority, then run_at, then age.
        "CREATE INDEX tasks_due ON tasks (priority DESC, run_at, id) WHERE status = 'pending'",
        "CREATE INDEX tasks_next_run ON tasks (run_at) WHERE status = 'pending'",
        "CREATE INDEX tasks_running ON tasks (owner) WHERE status = 'running'",
        "CREATE INDEX tasks_by_status ON tasks (status, id)",
        "CREATE INDEX tasks_by_name ON tasks (name, id)",
        "CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL",
        "CREATE UNIQUE INDEX tasks_unique_key ON tasks (unique_key) WHERE unique_key IS NOT NULL",
        """CREATE TABLE workers (
            id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            pid_started TEXT NOT NULL,
            seen_at REAL NOT NULL
        )""",
    ],
    [
        """CREATE TABLE schedules (
            id TEXT PRIMARY KEY,
            paused INTEGER NOT NULL DEFAULT 0,
            last_fire_at REAL
        )""",
        "CREATE INDEX tasks_active_by_schedule ON tasks (schedule_id) "
        "WHERE status IN ('pending', 'running') AND schedule_id IS NOT NULL",
    ],
    [
        """CREATE TABLE files (
            id TEXT PRIMARY KEY,
            filename TEXT NOT NULL,
            size INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX files_by_age ON files (created_at)",
    ],
    [
        # Every change of a task, in commit order, whichever process made it: what event
        # streams replay. Kept for a minute or so (see prune_events).
        """CREATE TABLE task_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id TEXT NOT NULL,
            status TEXT NOT NULL,
            progress REAL,
            message TEXT,
            result TEXT,
            error TEXT,
            attempts INTEGER NOT NULL,
            run_at REAL,
            started_at REAL,
            finished_at REAL,
            cancel_requested INTEGER NOT NULL
        )""",
        f"""CREATE TRIGGER tasks_inserted AFTER INSERT ON tasks BEGIN
            INSERT INTO task_events ({EVENT_FIELDS}) VALUES ({_NEW_EVENT_VALUES});
        END""",
        f"""CREATE TRIGGER tasks_changed AFTER UPDATE OF {EVENT_COLUMNS} ON tasks BEGIN
            INSERT INTO task_events ({EVENT_FIELDS}) VALUES ({_NEW_EVENT_VALUES});
        END""",
    ],
    [
        # Counters every process adds to: they survive restarts and purges, unlike tasks.
        """CREATE TABLE metric_counts (
            metric TEXT NOT NULL,
            name TEXT NOT NULL,
            label TEXT NOT NULL,
            value REAL NOT NULL,
            PRIMARY KEY (metric, name, label)
        ) WITHOUT ROWID""",
        "CREATE INDEX tasks_by_status_name ON tasks (status, name, id)",
    ],
    [
        # Lanes: plain tasks are claimed from one index, the others by lane (see sql.claim).
        "ALTER TABLE tasks ADD COLUMN lane TEXT",
        "DROP INDEX tasks_due",
        "CREATE INDEX tasks_due ON tasks (priority DESC, run_at, id) "
        "WHERE status = 'pending' AND lane IS NULL",
        "CREATE INDEX tasks_lane_due ON tasks (lane, priority DESC, run_at, id) "
        "WHERE status = 'pending' AND lane IS NOT NULL",
    ],
    [
        # Limits and pauses (see tasks_service.claims): each type's declaration as its
        # processes last stated it, the lanes that have waited, and recent starts.
        """CREATE TABLE task_types (
            name TEXT PRIMARY KEY,
            process INTEGER NOT NULL DEFAULT 0,
            concurrency INTEGER,
            rate_count INTEGER,
            rate_period REAL,
            limit_key TEXT,
            paused INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE lanes (
            lane TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            touched_at REAL NOT NULL
        )""",
        "CREATE INDEX lanes_by_name ON lanes (name)",
        """CREATE TABLE lane_starts (
            lane TEXT NOT NULL,
            name TEXT NOT NULL,
            started_at REAL NOT NULL
        )""",
        "CREATE INDEX lane_starts_by_lane ON lane_starts (lane, started_at)",
        "CREATE INDEX lane_starts_by_age ON lane_starts (started_at)",
        "CREATE INDEX tasks_lane_running ON tasks (lane) "
        "WHERE status = 'running' AND lane IS NOT NULL",
        f"""CREATE TRIGGER tasks_lane_queued AFTER INSERT ON tasks WHEN NEW.lane IS NOT NULL BEGIN
            {_LANE_SEEN}
        END""",
        f"""CREATE TRIGGER tasks_lane_moved AFTER UPDATE OF lane ON tasks
        WHEN NEW.lane IS NOT NULL BEGIN
            {_LANE_SEEN}
        END""",
        """CREATE TRIGGER tasks_lane_started AFTER UPDATE OF started_at ON tasks
        WHEN NEW.status = 'running' AND NEW.lane IS NOT NULL BEGIN
            INSERT INTO lane_starts (lane, name, started_at) SELECT NEW.lane, NEW.name,
                NEW.started_at WHERE EXISTS (SELECT 1 FROM task_types
                WHERE name = NEW.name AND rate_count IS NOT NULL);
        END""",
    ],
    [
        # Workflows: a child knows its parent (ctx.run, map, start).
        "ALTER TABLE tasks ADD COLUMN parent_id TEXT",
        "CREATE INDEX tasks_by_parent ON tasks (parent_id, id) WHERE parent_id IS NOT NULL",
    ],
    [
        # Schedules made at runtime live beside the state of those in code (source NULL).
        # `revision` numbers every change of one in commit order: each process reads what
        # changed since it last looked. A deleted one stays as a tombstone (`deleted`).
        "ALTER TABLE schedules ADD COLUMN source TEXT",
        "ALTER TABLE schedules ADD COLUMN task TEXT",
        "ALTER TABLE schedules ADD COLUMN params TEXT",
        "ALTER TABLE schedules ADD COLUMN every_seconds REAL",
        "ALTER TABLE schedules ADD COLUMN cron TEXT",
        "ALTER TABLE schedules ADD COLUMN tz TEXT",
        "ALTER TABLE schedules ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE schedules ADD COLUMN revision INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE schedules ADD COLUMN trigger_set_at REAL",
        "ALTER TABLE schedules ADD COLUMN last_run_at REAL",
        "ALTER TABLE schedules ADD COLUMN last_task_id TEXT",
        "CREATE INDEX schedules_by_revision ON schedules (revision)",
        # A schedule's recent runs (GET /tasks?schedule_id=).
        "CREATE INDEX tasks_by_schedule ON tasks (schedule_id, id) WHERE schedule_id IS NOT NULL",
    ],
    [
        # The last hours at a glance (runtime.stats): the attempts that ended in each minute,
        # by type, outcome and duration, counted in the transactions that end them (see
        # counted.CountedOutcome); the queue depth, sampled by the watchers.
        "ALTER TABLE tasks ADD COLUMN ended_as TEXT",
        """CREATE TABLE stats_minutes (
            minute INTEGER NOT NULL,
            name TEXT NOT NULL,
            outcome TEXT NOT NULL,
            bucket INTEGER NOT NULL,
            shard TEXT NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (minute, name, outcome, bucket, shard)
        ) WITHOUT ROWID""",
        """CREATE TABLE stats_depth (
            minute INTEGER PRIMARY KEY,
            depth INTEGER NOT NULL,
            sampled_at REAL NOT NULL
        )""",
        f"""CREATE TRIGGER tasks_counted AFTER UPDATE OF finished_at ON tasks
        WHEN {_COUNTED.when} BEGIN
            {_COUNTED_ROWS[0]};
            {_COUNTED_ROWS[1]};
        END""",
        f"""CREATE TRIGGER tasks_given_up AFTER UPDATE OF interruptions ON tasks
        WHEN {_COUNTED.given_up_when} BEGIN
            {_COUNTED_ROWS[0]};
        END""",
    ],
]

# Our processes write one transaction at a time (the file lock): no lock of its own.
STATEMENTS = Statements(DIALECT, lock_schedule=None)

_BUSY_TIMEOUT_MS = 15000


class SqliteStore(GroupCommitted, Store):
    """The SQLite store: one writer connection fed by a group committer, one reader."""

    sql = STATEMENTS

    def __init__(self, path: str, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._writer = SqliteWriter(path, busy_timeout_ms=_BUSY_TIMEOUT_MS)
        self._reader: aiosqlite.Connection | None = None
        # Scans that grow with the table (metrics) get a connection of their own, so that a
        # scrape never makes GET /tasks/{id} wait behind it.
        self._scanner: aiosqlite.Connection | None = None
        self._ended = EndedCounts(self.sql.add_ended, shard="")  # one writer: no shards
        self._committer = GroupCommitter(
            self._run_batch,
            errors=(sqlite3.OperationalError, sqlite3.DatabaseError),
            diagnose=lambda exc: None,
            key_taken=lambda exc: isinstance(exc, sqlite3.IntegrityError) and "UNIQUE" in str(exc),
            progress_sql=self.sql.progress,
            name="store-group-commit",
            ended=self._ended,
        )
        self._data_version: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        try:
            await self._writer.open()
            await self._writer.run(self._prepare_writer)
            self._reader = await self._connect()
            await self._reader.execute("PRAGMA query_only = 1")
            self._scanner = await self._connect()
            await self._scanner.execute("PRAGMA query_only = 1")
        except sqlite3.DatabaseError as exc:
            await self._close_connections()
            raise StoreOpenError(f"cannot use {self.path!r} as the task database: {exc}") from exc
        except BaseException:
            await self._close_connections()
            raise
        self._writer.take_turns()
        self._committer.start()

    async def close(self) -> None:
        await self._committer.close()
        await self._close_connections()

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.path, isolation_level=None)
        await conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
        return conn

    async def _close_connections(self) -> None:
        for conn in (self._scanner, self._reader):
            if conn is not None:
                await conn.close()
        self._scanner = self._reader = None
        await self._writer.close()

    def _prepare_writer(self, conn: sqlite3.Connection) -> None:
        """WAL, the durability level, and the schema migrated (on the writer's thread)."""
        # Switching to WAL fails at once, ignoring the busy timeout, while another process
        # (a sibling --workers process) writes: retry for as long as the busy timeout.
        deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        if mode != "wal":
            raise StoreOpenError(f"{self.path!r} could not be switched to WAL (it is {mode!r})")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        _ensure_math_functions(conn)
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreOpenError(
                    f"{self.path!r} has schema version {version}, newer than this service "
                    f"knows ({len(MIGRATIONS)}): upgrade the service"
                )
            for number in range(version, len(MIGRATIONS)):
                for statement in MIGRATIONS[number]:
                    conn.execute(statement)
                log.info("database %s migrated to schema version %d", self.path, number + 1)
            conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- reading and writing ---------------------------------------------------------------

    async def _run_batch(self, batch: list[Write]) -> list[Any]:
        return await self._writer.run(partial(self._run_transaction, batch))

    def _run_transaction(self, batch: list[Write], conn: sqlite3.Connection) -> list[Any]:
        """One batch as one transaction (on the writer's thread), our processes taking
        turns through the file lock."""
        lock = self._writer.lock
        assert lock is not None
        lock.acquire()
        try:
            if len(batch) == 1 and batch[0].alone:
                # One statement is its own transaction. Our processes already take turns
                # through the write lock, so it cannot meet another's uncommitted write.
                write = batch[0]
                cursor = conn.execute(write.sql, write.params[0])
                return [cursor.fetchall() if write.returning else None]
            conn.execute("BEGIN IMMEDIATE")
            try:
                results = [_run_write(conn, write) for write in batch]
                conn.execute("COMMIT")
                return results
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # the first error is the one to tell
                    conn.execute("ROLLBACK")
                raise
        finally:
            lock.release()

    async def _read(self, sql: str, params: Sequence[Any] = (), *, scan: bool = False) -> list[Any]:
        conn = self._scanner if scan else self._reader
        if conn is None:
            raise StoreUnavailable("the task store is closed")
        try:
            return list(await conn.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the task database cannot be used: {exc}") from exc

    # -- hearing of other processes --------------------------------------------------------

    async def changed(self) -> bool:
        """True when anything was committed since the last call (by any connection)."""
        rows = await self._read("PRAGMA data_version")
        version = rows[0][0]
        changed = version != self._data_version
        self._data_version = version
        return changed

    async def wait_for_change(self, timeout: float) -> None:
        """SQLite tells no one about commits: wait the polling interval, then look."""
        await asyncio.sleep(timeout)

    # -- change events ---------------------------------------------------------------------

    async def last_event(self) -> int:
        rows = await self._read("SELECT coalesce(max(seq), 0) FROM task_events")
        return int(rows[0][0])

    async def events_after(self, seq: int, limit: int = 1000) -> list[TaskEvent]:
        rows = await self._read(
            f"SELECT seq, {EVENT_FIELDS} FROM task_events WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [event_from_row(row) for row in rows]

    async def prune_events(self, up_to_seq: int) -> None:
        await self._write("DELETE FROM task_events WHERE seq <= ?", (up_to_seq,))


def _ensure_math_functions(conn: sqlite3.Connection) -> None:
    """`ln` and `floor` for the `tasks_counted` trigger, from Python where this SQLite was
    built without its math functions (slower, but a finish must never fail on them)."""
    try:
        conn.execute("SELECT ln(2.0), floor(1.5)").fetchone()
    except sqlite3.OperationalError:
        log.info("this SQLite has no math functions: using Python's for the per-minute counts")
        conn.create_function("ln", 1, _ln, deterministic=True)
        conn.create_function("floor", 1, _floor, deterministic=True)


def _ln(value: float | None) -> float | None:
    return None if value is None or value <= 0 else math.log(value)


def _floor(value: float | None) -> int | None:
    return None if value is None else math.floor(value)


def _run_write(conn: sqlite3.Connection, write: Write) -> Any:
    if write.steps is not None:
        results = []
        for sql, params in write.steps:
            if isinstance(params, Rows):
                conn.executemany(sql, params)
                results.append([])
            else:
                results.append(conn.execute(sql, params).fetchall())
        return results
    if write.returning:
        return conn.execute(write.sql, write.params[0]).fetchall()
    if len(write.params) == 1:
        conn.execute(write.sql, write.params[0])
    else:
        conn.executemany(write.sql, write.params)
    return None
