"""Every SQL statement of the service: one SQLite file.

Writes go through one writer connection (sqlite_writer: a whole transaction per trip to its
thread) and are group-committed: whatever was asked for while the previous transaction
committed goes into the next one, so a thousand tasks cost a few transactions, not a
thousand. A caller's write is acknowledged only once its transaction is committed. Reads use
aiosqlite connections of their own and never wait for the writer (WAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import logging
import sqlite3
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, ClassVar, Protocol

import aiosqlite

from config import Settings
from group_commit import GroupCommitter, Write
from models import (
    MAX_INTERRUPTIONS,
    TERMINAL_STATUSES,
    IdempotencyConflict,
    NewTask,
    StoreUnavailable,
    Task,
    TaskStatus,
    dump_json,
    iso,
    new_task_id,
)
from sqlite_writer import SqliteWriter

log = logging.getLogger("tasks.store")


class StoreOpenError(RuntimeError):
    """The database cannot be opened as a task store; the service must not start."""


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A process that runs tasks, as it last reported itself."""

    id: str
    host: str
    pid: int
    pid_started: str
    seen_at: float


@dataclass(frozen=True, slots=True)
class FileRecord:
    """An uploaded file's metadata; the bytes live under TASKS_DATA_DIR, named by `id`."""

    id: str
    filename: str
    size: int
    sha256: str
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "filename": self.filename,
            "size": self.size,
            "sha256": self.sha256,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """A task's changing fields right after one committed change."""

    seq: int
    task_id: str
    status: TaskStatus
    progress: float | None
    message: str | None
    result: Any
    error: str | None
    attempts: int
    run_at: float | None
    started_at: float | None
    finished_at: float | None
    cancel_requested: bool

    def applied_to(self, task: Task) -> Task:
        """`task` (for the fields that never change) as it was after this change."""
        return replace(
            task,
            status=self.status,
            progress=self.progress,
            message=self.message,
            result=self.result,
            error=self.error,
            attempts=self.attempts,
            run_at=self.run_at if self.run_at is not None else task.run_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            cancel_requested=self.cancel_requested,
            event_seq=self.seq,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, as the runner decided it."""

    status: TaskStatus
    result_json: str | None = None
    error: str | None = None
    retry_at: float | None = None  # set with status PENDING: wait for a retry


class Store(Protocol):
    """The storage verbs the runner and the service use; nothing above knows the database."""

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    async def create(self, new: NewTask, *, claim_for: str | None = None) -> tuple[Task, bool]: ...
    async def create_tick(
        self, new: NewTask, *, claim_for: str | None = None
    ) -> tuple[Task | None, bool]: ...
    async def schedule_states(self) -> dict[str, tuple[bool, float | None]]: ...
    async def set_paused(self, schedule_id: str, paused: bool) -> None: ...
    async def get(self, task_id: str) -> Task | None: ...
    async def list(
        self, *, statuses: Sequence[str], name: str | None, before_id: str | None, limit: int
    ) -> list[Task]: ...

    async def claim(self, owner: str, limit: int) -> list[Task]: ...
    def finish(self, task: Task, outcome: Outcome) -> Awaitable[None]: ...
    def report_progress(self, task_id: str, percent: float, message: str | None) -> None: ...
    def progress_committed(self) -> asyncio.Future[None] | None: ...
    async def release(self, task: Task) -> None: ...
    async def unclaim(self, tasks: Sequence[Task]) -> None: ...
    async def cancel_pending(self, task_id: str) -> Task | None: ...
    async def request_cancel(self, task_id: str) -> Task | None: ...
    async def cancel_requests(self, owner: str) -> list[str]: ...
    async def running_for(self, owner: str) -> list[Task]: ...

    async def next_run_at(self) -> float | None: ...
    async def has_due(self) -> bool: ...
    async def changed(self) -> bool: ...
    async def wait_for_change(self, timeout: float) -> None: ...

    async def register_worker(self, worker: WorkerInfo) -> None: ...
    async def heartbeat(self, worker_id: str) -> bool: ...
    async def workers(self) -> list[WorkerInfo]: ...
    async def recover(self, worker_id: str) -> list[Task]: ...
    async def remove_worker(self, worker_id: str) -> None: ...
    async def orphan_owners(self) -> list[str]: ...
    async def purge(self, older_than: float) -> int: ...
    async def add_file(self, record: FileRecord) -> None: ...
    async def get_file(self, file_id: str) -> FileRecord | None: ...
    async def files_created_before(self, cutoff: float) -> list[str]: ...
    async def forget_file_unless_in_use(self, file_id: str) -> bool: ...
    async def last_event(self) -> int: ...
    async def events_after(self, seq: int, limit: int = 1000) -> list[TaskEvent]: ...
    async def prune_events(self, up_to_seq: int) -> None: ...
    async def task_counts(self) -> list[tuple[str, str, int]]: ...
    async def queue_stats(self) -> tuple[int, float | None]: ...
    async def add_metric_counts(self, deltas: dict[tuple[str, str, str], float]) -> None: ...
    async def metric_counts(self) -> list[tuple[str, str, str, float]]: ...


def is_postgres_url(db: str) -> bool:
    return db.startswith(("postgresql://", "postgres://"))


async def open_store(settings: Settings) -> Store:
    """The store that TASKS_DB names (a file path, or a postgresql:// URL), opened and migrated."""
    store: Store
    if is_postgres_url(settings.db):
        from pg_store import PostgresStore  # asyncpg is loaded only by those who use it

        store = PostgresStore(settings.db)
    else:
        store = SqliteStore(settings.db, synchronous=settings.sqlite_synchronous)
    await store.open()
    return store


_EVENT_FIELDS = (
    "task_id, status, progress, message, result, error, attempts, run_at, started_at, "
    "finished_at, cancel_requested"
)
_NEW_EVENT_VALUES = (
    "NEW.id, NEW.status, NEW.progress, NEW.message, NEW.result, NEW.error, NEW.attempts, "
    "NEW.run_at, NEW.started_at, NEW.finished_at, NEW.cancel_requested"
)

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
            INSERT INTO task_events ({_EVENT_FIELDS}) VALUES ({_NEW_EVENT_VALUES});
        END""",
        f"""CREATE TRIGGER tasks_changed AFTER UPDATE OF {_EVENT_FIELDS[9:]} ON tasks BEGIN
            INSERT INTO task_events ({_EVENT_FIELDS}) VALUES ({_NEW_EVENT_VALUES});
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
]

_COLUMNS = (
    "id, name, params, status, progress, message, result, error, attempts, max_attempts, "
    "priority, created_at, run_at, started_at, finished_at, cancel_requested, schedule_id, "
    "timeout, owner, interruptions, released"
)

_INSERT = (
    "INSERT INTO tasks (id, name, params, status, attempts, max_attempts, priority, created_at, "
    "run_at, started_at, schedule_id, timeout, owner, unique_key, request_hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ON_KEY_TAKEN = " ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING RETURNING id"
_INSERT_UNIQUE = _INSERT + _ON_KEY_TAKEN
# A schedule's tick: once per tick, never while an earlier run is active or it is paused.
_INSERT_TICK = (
    _INSERT.split(" VALUES ")[0] + " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? "
    "WHERE NOT EXISTS (SELECT 1 FROM tasks WHERE schedule_id = ? "
    "AND status IN ('pending', 'running') AND schedule_id IS NOT NULL) "
    "AND NOT EXISTS (SELECT 1 FROM schedules WHERE id = ? AND paused)" + _ON_KEY_TAKEN
)
_RECORD_TICK = (
    "INSERT INTO schedules (id, last_fire_at) VALUES (?, ?) ON CONFLICT (id) "
    "DO UPDATE SET last_fire_at = max(coalesce(last_fire_at, 0), excluded.last_fire_at)"
)
# INDEXED BY: left to itself, the planner walks (status, name) and sorts every pending task.
_CLAIM = (
    "UPDATE tasks SET status = 'running', owner = ?, attempts = attempts + 1, started_at = ? "
    "WHERE id IN (SELECT id FROM tasks INDEXED BY tasks_due "
    "WHERE status = 'pending' AND run_at <= ? "
    "ORDER BY priority DESC, run_at, id LIMIT ?) "
    f"RETURNING {_COLUMNS}"
)
# A cancel stored before this write wins over how the attempt ended (even a success that
# raced with it): once a cancel was accepted, the task ends cancelled and is never retried.
_FINISH = (
    "UPDATE tasks SET "
    "status = CASE WHEN cancel_requested THEN 'cancelled' ELSE ? END, "
    "result = CASE WHEN cancel_requested THEN NULL ELSE ? END, "
    "error = CASE WHEN cancel_requested THEN NULL ELSE ? END, "
    "finished_at = CASE WHEN cancel_requested THEN ? ELSE ? END, "
    "run_at = CASE WHEN cancel_requested THEN run_at ELSE COALESCE(?, run_at) END "
    "WHERE id = ? AND owner = ? AND status = 'running'"
)
_PROGRESS = "UPDATE tasks SET progress = ?, message = ? WHERE id = ? AND status = 'running'"
# A graceful shutdown gives the task back, unless its user asked for it to be cancelled.
_RELEASE = (
    "UPDATE tasks SET released = released + 1, "
    "status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'pending' END, "
    "finished_at = CASE WHEN cancel_requested THEN ? END "
    "WHERE id = ? AND owner = ? AND status = 'running'"
)
INTERRUPTED_ERROR = (
    f"interrupted {MAX_INTERRUPTIONS} times: the process running it died each time, "
    "so it will not be started again"
)
# Tasks of a dead process: run again, or give up after repeated interruptions.
_RECOVER = (
    "UPDATE tasks SET interruptions = interruptions + 1, "
    "status = CASE WHEN cancel_requested THEN 'cancelled' "
    f"  WHEN interruptions + 1 >= {MAX_INTERRUPTIONS} THEN 'failed' ELSE 'pending' END, "
    "error = CASE WHEN cancel_requested THEN error "
    f"  WHEN interruptions + 1 >= {MAX_INTERRUPTIONS} THEN ? ELSE error END, "
    "finished_at = CASE WHEN cancel_requested "
    f"  OR interruptions + 1 >= {MAX_INTERRUPTIONS} THEN ? END, "
    "run_at = ? "
    f"WHERE owner = ? AND status = 'running' RETURNING {_COLUMNS}"
)

_BUSY_TIMEOUT_MS = 15000


class GroupCommittedStore:
    """What both stores do alike around their own SQL: writes queued on a group committer,
    creation with unique keys, claims, final writes, progress, paged lists.

    A subclass sets `_committer` and the statements below, and reads with `_read`.
    """

    _committer: GroupCommitter
    _INSERT: ClassVar[str]
    _INSERT_UNIQUE: ClassVar[str]  # inserts, or returns no row when the key is taken
    _BY_UNIQUE_KEY: ClassVar[str]  # the task holding a key, its request hash last
    _CLAIM: ClassVar[str]  # takes (owner, started_at, now, limit)
    _FINISH: ClassVar[str]  # takes the values that finish() passes

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        raise NotImplementedError

    async def _list_one(
        self, status: str | None, name: str | None, before_id: str | None, limit: int
    ) -> list[Task]:
        raise NotImplementedError

    def _submit(self, sql: str, params: Sequence[Any], *, returning: bool) -> asyncio.Future[Any]:
        return self._committer.submit(sql, params, returning=returning)

    # Futures, not coroutines: an enqueue waiting for its commit keeps one object fewer alive
    # (thousands wait at once in a burst, and the garbage collector walks them all).
    def _write(self, sql: str, params: Sequence[Any]) -> asyncio.Future[None]:
        return self._committer.submit(sql, params, returning=False)

    def _write_returning(self, sql: str, params: Sequence[Any]) -> asyncio.Future[list[Any]]:
        return self._committer.submit(sql, params, returning=True)

    async def create(self, new: NewTask, *, claim_for: str | None = None) -> tuple[Task, bool]:
        """Insert a task; with `claim_for`, insert it already running for that worker.

        With its unique key already taken, nothing is inserted: the task holding the key is
        returned with False if it was made from the same request, else IdempotencyConflict.
        """
        task, params = new_task_row(new, claim_for)
        if new.unique_key is None:
            await self._write(self._INSERT, params)
            return task, True
        while True:
            if await self._write_returning(self._INSERT_UNIQUE, params):
                return task, True
            rows = await self._read(self._BY_UNIQUE_KEY, (new.unique_key,))
            if rows:
                if rows[0][-1] != new.request_hash:
                    raise IdempotencyConflict(rows[0][0])
                return task_from_row(rows[0]), False
            # The holder of the key was deleted in between: the key is free again.

    async def list(
        self, *, statuses: Sequence[str], name: str | None, before_id: str | None, limit: int
    ) -> list[Task]:
        """Newest first; `before_id` continues a previous page.

        Several statuses are read one indexed range each and merged: the database would
        otherwise sort every task with those statuses to find the newest few.
        """
        if len(statuses) > 1:
            pages = [await self._list_one(s, name, before_id, limit) for s in statuses]
            return newest_first(pages, limit)
        return await self._list_one(statuses[0] if statuses else None, name, before_id, limit)

    async def claim(self, owner: str, limit: int) -> list[Task]:
        """Mark up to `limit` due tasks running for `owner`, best first."""
        now = time.time()
        rows = await self._write_returning(self._CLAIM, (owner, now, now, limit))
        tasks = [task_from_row(row) for row in rows]
        tasks.sort(key=lambda t: (-t.priority, t.run_at, t.id))
        return tasks

    def finish(self, task: Task, outcome: Outcome) -> asyncio.Future[None]:
        """Record how an attempt ended; a no-op unless `task.owner` still runs it.

        Queued at once (so the caller may move on, e.g. free the task's slot, and let the
        next claim share this write's transaction); the returned future is its commit.
        """
        now = time.time()
        finished_at = None if outcome.status is TaskStatus.PENDING else now
        return self._submit(
            self._FINISH,
            (
                outcome.status.value,
                outcome.result_json,
                outcome.error,
                now,
                finished_at,
                outcome.retry_at,
                task.id,
                task.owner,
            ),
            returning=False,
        )

    def report_progress(self, task_id: str, percent: float, message: str | None) -> None:
        """Queue a progress update; only the latest per task reaches the next commit."""
        self._committer.report_progress(task_id, float(percent), message)

    def progress_committed(self) -> asyncio.Future[None] | None:
        """A future done once the progress reported so far is committed (None: it is)."""
        return self._committer.progress_committed()


class SqliteStore(GroupCommittedStore):
    """The SQLite store: one writer connection fed by a group committer, one reader."""

    _INSERT = _INSERT
    _INSERT_UNIQUE = _INSERT_UNIQUE
    _BY_UNIQUE_KEY = f"SELECT {_COLUMNS}, request_hash FROM tasks WHERE unique_key = ?"
    _CLAIM = _CLAIM
    _FINISH = _FINISH

    def __init__(self, path: str, *, synchronous: str = "FULL") -> None:
        self.path = path
        self._synchronous = synchronous
        self._writer = SqliteWriter(path, busy_timeout_ms=_BUSY_TIMEOUT_MS)
        self._reader: aiosqlite.Connection | None = None
        # Scans that grow with the table (metrics) get a connection of their own, so that a
        # scrape never makes GET /tasks/{id} wait behind it.
        self._scanner: aiosqlite.Connection | None = None
        self._committer = GroupCommitter(
            self._run_batch,
            errors=(sqlite3.OperationalError, sqlite3.DatabaseError),
            diagnose=lambda exc: None,
            progress_sql=_PROGRESS,
            name="store-group-commit",
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
        """Commit everything already asked for, then close."""
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

    async def ping(self) -> None:
        await self._read("SELECT count(*) FROM workers")

    # -- the group committer ---------------------------------------------------------------

    async def _run_batch(self, batch: list[Write]) -> list[Any]:
        return await self._writer.run(partial(self._run_transaction, batch))

    def _run_transaction(self, batch: list[Write], conn: sqlite3.Connection) -> list[Any]:
        """One batch as one transaction (on the writer's thread), our processes taking
        turns through the file lock."""
        lock = self._writer.lock
        assert lock is not None
        lock.acquire()
        try:
            if len(batch) == 1 and len(batch[0].params) == 1:
                # One statement is its own transaction. Our processes already take turns
                # through the write lock, so it cannot meet another's uncommitted write.
                write = batch[0]
                cursor = conn.execute(write.sql, write.params[0])
                return [cursor.fetchall() if write.returning else None]
            conn.execute("BEGIN IMMEDIATE")
            try:
                results: list[Any] = []
                for write in batch:
                    if write.returning:
                        results.append(conn.execute(write.sql, write.params[0]).fetchall())
                    elif len(write.params) == 1:
                        conn.execute(write.sql, write.params[0])
                        results.append(None)
                    else:
                        conn.executemany(write.sql, write.params)
                        results.append(None)
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
            raise _unavailable(exc) from exc

    # -- tasks -----------------------------------------------------------------------------

    async def create_tick(
        self, new: NewTask, *, claim_for: str | None = None
    ) -> tuple[Task | None, bool]:
        """Insert a schedule's run for the tick in `new.unique_key`, unless another process
        already did, an earlier run of the schedule is still pending or running, or the
        schedule is paused. Returns (task, True) or (None, False)."""
        assert new.schedule_id is not None and new.unique_key is not None
        task, params = new_task_row(new, claim_for)
        inserted = self._submit(
            _INSERT_TICK, (*params, new.schedule_id, new.schedule_id), returning=True
        )
        recorded = self._submit(_RECORD_TICK, (new.schedule_id, task.run_at), returning=False)
        rows, _ = await asyncio.gather(inserted, recorded)
        return (task, True) if rows else (None, False)

    async def schedule_states(self) -> dict[str, tuple[bool, float | None]]:
        """Each known schedule's (paused, last tick handled)."""
        rows = await self._read("SELECT id, paused, last_fire_at FROM schedules")
        return {row[0]: (bool(row[1]), row[2]) for row in rows}

    async def set_paused(self, schedule_id: str, paused: bool) -> None:
        await self._write(
            "INSERT INTO schedules (id, paused) VALUES (?, ?) "
            "ON CONFLICT (id) DO UPDATE SET paused = excluded.paused",
            (schedule_id, int(paused)),
        )

    async def get(self, task_id: str) -> Task | None:
        rows = await self._read(f"SELECT {_COLUMNS} FROM tasks WHERE id = ?", (task_id,))
        return task_from_row(rows[0]) if rows else None

    async def _list_one(
        self, status: str | None, name: str | None, before_id: str | None, limit: int
    ) -> list[Task]:
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if name is not None:
            where.append("name = ?")
            params.append(name)
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM tasks {clause} ORDER BY id DESC LIMIT ?", (*params, limit)
        )
        return [task_from_row(row) for row in rows]

    async def release(self, task: Task) -> None:
        await self._write(_RELEASE, (time.time(), task.id, task.owner))

    async def unclaim(self, tasks: Sequence[Task]) -> None:
        """Give back tasks claimed but never started (the service began to stop meanwhile)."""
        await self._committer.submit_many(
            "UPDATE tasks SET status = 'pending', attempts = attempts - 1, "
            "started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END "
            "WHERE id = ? AND owner = ? AND status = 'running'",
            [(task.id, task.owner) for task in tasks],
        )

    async def cancel_pending(self, task_id: str) -> Task | None:
        """Cancel a task that has not started; None if it is not pending."""
        rows = await self._write_returning(
            "UPDATE tasks SET status = 'cancelled', cancel_requested = 1, finished_at = ? "
            f"WHERE id = ? AND status = 'pending' RETURNING {_COLUMNS}",
            (time.time(), task_id),
        )
        return task_from_row(rows[0]) if rows else None

    async def request_cancel(self, task_id: str) -> Task | None:
        """Ask the process running a task to stop it; None if it is not running."""
        rows = await self._write_returning(
            "UPDATE tasks SET cancel_requested = 1 "
            f"WHERE id = ? AND status = 'running' RETURNING {_COLUMNS}",
            (task_id,),
        )
        return task_from_row(rows[0]) if rows else None

    async def cancel_requests(self, owner: str) -> list[str]:
        rows = await self._read(
            "SELECT id FROM tasks WHERE owner = ? AND status = 'running' AND cancel_requested",
            (owner,),
        )
        return [row[0] for row in rows]

    async def running_for(self, owner: str) -> list[Task]:
        """The tasks stored as running for `owner`."""
        rows = await self._read(
            f"SELECT {_COLUMNS} FROM tasks INDEXED BY tasks_running "
            "WHERE owner = ? AND status = 'running'",
            (owner,),
        )
        return [task_from_row(row) for row in rows]

    async def next_run_at(self) -> float | None:
        rows = await self._read(
            "SELECT min(run_at) FROM tasks INDEXED BY tasks_next_run WHERE status = 'pending'"
        )
        return rows[0][0]

    async def has_due(self) -> bool:
        rows = await self._read(
            "SELECT 1 FROM tasks INDEXED BY tasks_next_run "
            "WHERE status = 'pending' AND run_at <= ? LIMIT 1",
            (time.time(),),
        )
        return bool(rows)

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

    # -- workers ---------------------------------------------------------------------------

    async def register_worker(self, worker: WorkerInfo) -> None:
        await self._write(
            "INSERT OR REPLACE INTO workers (id, host, pid, pid_started, seen_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (worker.id, worker.host, worker.pid, worker.pid_started, worker.seen_at),
        )

    async def heartbeat(self, worker_id: str) -> bool:
        """Say this worker lives; False if others already took it for dead."""
        rows = await self._write_returning(
            "UPDATE workers SET seen_at = ? WHERE id = ? RETURNING id", (time.time(), worker_id)
        )
        return bool(rows)

    async def workers(self) -> list[WorkerInfo]:
        rows = await self._read("SELECT id, host, pid, pid_started, seen_at FROM workers")
        return [WorkerInfo(*row) for row in rows]

    async def recover(self, worker_id: str) -> list[Task]:
        """Put a dead worker's running tasks back to pending (or give up on them)."""
        now = time.time()
        rows = await self._write_returning(_RECOVER, (INTERRUPTED_ERROR, now, now, worker_id))
        return [task_from_row(row) for row in rows]

    async def remove_worker(self, worker_id: str) -> None:
        await self._write("DELETE FROM workers WHERE id = ?", (worker_id,))

    async def orphan_owners(self) -> list[str]:
        """Owners of running tasks that are not registered workers (they died unregistered)."""
        rows = await self._read(
            "SELECT DISTINCT owner FROM tasks INDEXED BY tasks_running WHERE status = 'running' "
            "AND owner NOT IN (SELECT id FROM workers)"
        )
        return [row[0] for row in rows]

    # -- uploaded files --------------------------------------------------------------------

    async def add_file(self, record: FileRecord) -> None:
        await self._write(
            "INSERT INTO files (id, filename, size, sha256, created_at) VALUES (?, ?, ?, ?, ?)",
            (record.id, record.filename, record.size, record.sha256, record.created_at),
        )

    async def get_file(self, file_id: str) -> FileRecord | None:
        rows = await self._read(
            "SELECT id, filename, size, sha256, created_at FROM files WHERE id = ?", (file_id,)
        )
        return FileRecord(*rows[0]) if rows else None

    async def files_created_before(self, cutoff: float) -> list[str]:
        rows = await self._read("SELECT id FROM files WHERE created_at < ?", (cutoff,))
        return [row[0] for row in rows]

    async def forget_file_unless_in_use(self, file_id: str) -> bool:
        """Delete a file's record unless a pending or running task names it in its params."""
        rows = await self._write_returning(
            "DELETE FROM files WHERE id = ? AND NOT EXISTS (SELECT 1 FROM tasks "
            "WHERE status IN ('pending', 'running') AND instr(params, ?) > 0) RETURNING id",
            (file_id, f'"{file_id}"'),
        )
        return bool(rows)

    # -- change events ---------------------------------------------------------------------

    async def last_event(self) -> int:
        rows = await self._read("SELECT coalesce(max(seq), 0) FROM task_events")
        return int(rows[0][0])

    async def events_after(self, seq: int, limit: int = 1000) -> list[TaskEvent]:
        """Task changes committed after `seq`, oldest first."""
        rows = await self._read(
            f"SELECT seq, {_EVENT_FIELDS} FROM task_events WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [event_from_row(row) for row in rows]

    async def prune_events(self, up_to_seq: int) -> None:
        await self._write("DELETE FROM task_events WHERE seq <= ?", (up_to_seq,))

    # -- metrics ---------------------------------------------------------------------------

    async def task_counts(self) -> list[tuple[str, str, int]]:
        """(status, name, count) of the tasks in the store."""
        rows = await self._read(
            "SELECT status, name, count(*) FROM tasks GROUP BY status, name", scan=True
        )
        return [(row[0], row[1], row[2]) for row in rows]

    async def queue_stats(self) -> tuple[int, float | None]:
        """How many pending tasks are due now, and since when the oldest has waited."""
        rows = await self._read(
            "SELECT count(*), min(run_at) FROM tasks INDEXED BY tasks_next_run "
            "WHERE status = 'pending' AND run_at <= ?",
            (time.time(),),
            scan=True,
        )
        return rows[0][0], rows[0][1]

    async def add_metric_counts(self, deltas: dict[tuple[str, str, str], float]) -> None:
        await self._committer.submit_many(
            "INSERT INTO metric_counts (metric, name, label, value) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (metric, name, label) DO UPDATE SET value = value + excluded.value",
            [(*key, value) for key, value in deltas.items()],
        )

    async def metric_counts(self) -> list[tuple[str, str, str, float]]:
        rows = await self._read("SELECT metric, name, label, value FROM metric_counts", scan=True)
        return [(row[0], row[1], row[2], row[3]) for row in rows]

    # -- maintenance -----------------------------------------------------------------------

    async def purge(self, older_than: float, *, chunk: int = 1000) -> int:
        """Delete terminal tasks finished before `older_than`, in short transactions."""
        statuses = tuple(s.value for s in TERMINAL_STATUSES)
        deleted = 0
        while True:
            rows = await self._write_returning(
                "DELETE FROM tasks WHERE id IN (SELECT id FROM tasks INDEXED BY tasks_finished "
                "WHERE finished_at < ? "
                "AND status IN (?, ?, ?) LIMIT ?) RETURNING id",
                (older_than, *statuses, chunk),
            )
            deleted += len(rows)
            if len(rows) < chunk:
                return deleted


def newest_first(pages: Sequence[Sequence[Task]], limit: int) -> list[Task]:
    """Pages each sorted newest first, merged into one page of at most `limit`."""
    merged = heapq.merge(*pages, key=lambda task: task.id, reverse=True)
    return list(itertools.islice(merged, limit))


def new_task_row(new: NewTask, claim_for: str | None) -> tuple[Task, tuple[Any, ...]]:
    """The task as it will be stored, and the values of its INSERT."""
    task_id, created_at = new_task_id()
    run_at = created_at if new.run_at is None else new.run_at
    status = TaskStatus.RUNNING if claim_for else TaskStatus.PENDING
    started_at = created_at if claim_for else None
    attempts = 1 if claim_for else 0
    params = (
        task_id,
        new.name,
        dump_json(new.params),
        status.value,
        attempts,
        new.max_attempts,
        new.priority,
        created_at,
        run_at,
        started_at,
        new.schedule_id,
        new.timeout,
        claim_for,
        new.unique_key,
        new.request_hash,
    )
    task = Task(
        id=task_id,
        name=new.name,
        params=new.params,
        status=status,
        progress=None,
        message=None,
        result=None,
        error=None,
        attempts=attempts,
        max_attempts=new.max_attempts,
        priority=new.priority,
        created_at=created_at,
        run_at=run_at,
        started_at=started_at,
        finished_at=None,
        cancel_requested=False,
        schedule_id=new.schedule_id,
        timeout=new.timeout,
        owner=claim_for,
    )
    return task, params


def _unavailable(exc: sqlite3.Error) -> StoreUnavailable:
    return StoreUnavailable(f"the task database cannot be used: {exc}")


def event_from_row(row: Sequence[Any]) -> TaskEvent:
    return TaskEvent(
        seq=row[0],
        task_id=row[1],
        status=TaskStatus(row[2]),
        progress=None if row[3] is None else float(row[3]),
        message=row[4],
        result=None if row[5] is None else json.loads(row[5]),
        error=row[6],
        attempts=row[7],
        run_at=row[8],
        started_at=row[9],
        finished_at=row[10],
        cancel_requested=bool(row[11]),
    )


def task_from_row(row: Sequence[Any]) -> Task:
    return Task(
        id=row[0],
        name=row[1],
        params=json.loads(row[2]),
        status=TaskStatus(row[3]),
        progress=None if row[4] is None else float(row[4]),
        message=row[5],
        result=None if row[6] is None else json.loads(row[6]),
        error=row[7],
        attempts=row[8],
        max_attempts=row[9],
        priority=row[10],
        created_at=row[11],
        run_at=row[12],
        started_at=row[13],
        finished_at=row[14],
        cancel_requested=bool(row[15]),
        schedule_id=row[16],
        timeout=row[17],
        owner=row[18],
        interruptions=row[19],
        released=row[20],
    )
