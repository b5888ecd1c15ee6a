"""The SQLite store's one writer: a connection on a thread of its own, a batch per trip.

aiosqlite runs each call on its connection's thread, so a transaction of four statements
(BEGIN, two writes, COMMIT) is four trips between the event loop and that thread, and each
trip back waits for the loop to finish whatever it is running. Here a whole transaction is a
function run on the writer's thread: one trip, so the loop can run the tasks one commit
started while the next commit is on its way. Reads stay on aiosqlite connections.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

log = logging.getLogger("tasks.store")

T = TypeVar("T")


class ProcessWriteLock:
    """Processes sharing the file take turns at writing through a kernel file lock.

    SQLite alone makes a writer that finds the file locked sleep and poll (1, 2, 5, 10 ms
    and more), so with --workers N most of a transaction's wait is sleep after the lock is
    already free. flock wakes the next writer the moment it is released. SQLite's own lock
    still guards correctness; this only orders the turns. Used from the writer's thread,
    where waiting blocks nothing else.
    """

    def __init__(self, db_path: str) -> None:
        self._fd: int | None = None
        try:
            self._fd = os.open(f"{db_path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            log.warning("no write lock file next to %s (%s): SQLite's busy wait only", db_path, exc)

    def acquire(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SqliteWriter:
    """One sqlite3 connection, used only from one thread that exists for it."""

    def __init__(self, path: str, *, busy_timeout_ms: int) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tasks-sqlite-writer")
        self._conn: sqlite3.Connection | None = None
        self.lock: ProcessWriteLock | None = None

    async def open(self) -> None:
        self._conn = await self._on_thread(self._connect)

    def take_turns(self) -> None:
        """From now on, transactions take turns with other processes through the lock file
        (made only once the database is known to be ours: a refused file gets no neighbour)."""
        self.lock = ProcessWriteLock(self.path)

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        return conn

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)` on the writer's thread: one trip however much it does."""
        if self._conn is None:
            raise sqlite3.ProgrammingError("the writer is closed")
        return await self._on_thread(partial(work, self._conn))

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._on_thread(conn.close)
        if self.lock is not None:
            self.lock.close()
            self.lock = None
        self._thread.shutdown(wait=False)

    async def _on_thread(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, work)
