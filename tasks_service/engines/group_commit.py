"""Group commit: many callers' writes in one transaction, each acknowledged once it commits.

Both stores write through one of these. Whatever is asked for while a transaction commits
goes into the next one, writes of the same statement merged into one `executemany`, so a
thousand tasks cost a few transactions, not a thousand. Progress reports are coalesced to the
latest per task and always go first in their batch: a task's last report must land before
the write that ends it. A batch that fails on one bad write is retried write by write, so one
bad row never sinks its neighbours. A write of several statements (`queue_atomically`) is
one unit: it runs in its batch's transaction, and fails or commits whole.

`GroupCommitted` gives a store the write verbs of `store.Store` on top of a committer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks_service.counted import duration_bucket
from tasks_service.models import KeyTaken, StoreUnavailable

log = logging.getLogger("tasks.store")


@dataclass(slots=True)
class Write:
    """One statement with one or more rows of parameters, and who waits for it.

    With `steps`, several statements instead (`sql` and `params` unused), run in order in
    the same transaction; the result is the rows of each.
    """

    sql: str
    params: list[Sequence[Any]]
    returning: bool
    futures: list[asyncio.Future[Any]] = field(default_factory=list)
    steps: Sequence[tuple[str, Sequence[Any]]] | None = None

    @property
    def splittable(self) -> bool:
        """Several callers' rows merged into one write: each can be retried on its own."""
        return len(self.params) > 1 and len(self.futures) == len(self.params)

    @property
    def alone(self) -> bool:
        """One statement with one row: its own transaction, with no BEGIN around it."""
        return self.steps is None and len(self.params) == 1


class EndedCounts:
    """The attempts this process ended since the last batch, by (type, outcome, duration
    bucket): one row each, added to its minute's counts (GET /stats) by the batch that
    stores those ends. Written into the same transaction, they commit or fail with them;
    a failed batch's finishes are asked for again, and counted again, so its counts go."""

    def __init__(self, sql: str, shard: str) -> None:
        """`sql`: the upsert taking (name, outcome, bucket, shard, n); `shard`: whose rows."""
        self._sql = sql
        self._shard = shard
        self._counts: dict[tuple[str, str, int], int] = {}

    def add(self, name: str, outcome: str, seconds: float | None) -> None:
        key = (name, outcome, duration_bucket(seconds))
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1

    def take(self) -> Write | None:
        """The write of what was counted so far (None: nothing), to go in this batch."""
        if not self._counts:
            return None
        counts, self._counts = self._counts, {}
        shard = self._shard
        rows = [(name, outcome, bucket, shard, n) for (name, outcome, bucket), n in counts.items()]
        return Write(self._sql, rows, False)


# Runs a batch as one transaction; returns one result per write (rows when `returning`).
RunBatch = Callable[[list[Write]], Awaitable[list[Any]]]
# What a failed batch means: None to retry its writes one by one, or the error to hand out.
Diagnose = Callable[[BaseException], StoreUnavailable | None]


class GroupCommitter:
    def __init__(
        self,
        run_batch: RunBatch,
        *,
        errors: tuple[type[BaseException], ...],
        diagnose: Diagnose,
        progress_sql: str,
        name: str,
        key_taken: Callable[[BaseException], bool] = lambda exc: False,
        ended: EndedCounts | None = None,
    ) -> None:
        """`errors`: what `run_batch` raises for a database problem (anything else is a bug);
        `progress_sql`: UPDATE taking (percent, message, task id); `key_taken`: whether an
        error is a unique key already held (told to the writer as KeyTaken); `ended`: the
        counts that ride in each batch, after its writes."""
        self._run_batch = run_batch
        self._errors = errors
        self._diagnose = diagnose
        self._key_taken = key_taken
        self._progress_sql = progress_sql
        self._name = name
        self._ended = ended
        self._queue: list[Write] = []
        self._progress: dict[str, tuple[float, str | None]] = {}
        self._progress_waiter: asyncio.Future[None] | None = None
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_forever(), name=self._name)

    async def close(self) -> None:
        """Commit everything already asked for, then stop."""
        self._closing = True
        if self._flusher is not None:
            self._wakeup.set()
            await self._flusher
            self._flusher = None

    def queue(self, sql: str, params: Sequence[Any], *, returning: bool) -> asyncio.Future[Any]:
        """Queue one write; the future is its commit (with the rows when `returning`)."""
        return self._enqueue(Write(sql, [params], returning))

    async def queue_many(self, sql: str, rows: list[Sequence[Any]]) -> None:
        """Many rows of one statement, in one transaction."""
        if rows:
            await self._enqueue(Write(sql, list(rows), False))

    def queue_atomically(
        self, steps: Sequence[tuple[str, Sequence[Any]]]
    ) -> asyncio.Future[list[list[Any]]]:
        """Statements in one transaction, in order; the future has the rows of each."""
        return self._enqueue(Write("", [], True, steps=steps))

    def _enqueue(self, write: Write) -> asyncio.Future[Any]:
        if self._flusher is None or self._closing:
            raise StoreUnavailable("the task store is closed")
        future = asyncio.get_running_loop().create_future()
        write.futures.append(future)
        self._queue.append(write)
        self._wakeup.set()
        return future

    def report_progress(self, task_id: str, percent: float, message: str | None) -> None:
        """Queue a progress update; only the latest per task reaches the next commit."""
        self._progress[task_id] = (percent, message)
        self._wakeup.set()

    def progress_committed(self) -> asyncio.Future[None] | None:
        """A future done once the progress reported so far is committed (None: it is)."""
        if not self._progress:
            return None
        if self._progress_waiter is None:
            self._progress_waiter = asyncio.get_running_loop().create_future()
        return self._progress_waiter

    async def _flush_forever(self) -> None:
        while True:
            if not (self._queue or self._progress):
                if self._closing:
                    return
                await self._wakeup.wait()
                self._wakeup.clear()
                # Let the callbacks already ready run first: a task that just ended frees a
                # slot, whose claim then joins its finish in this transaction, not the next.
                await asyncio.sleep(0)
                continue
            batch = self._take_batch()
            try:
                await self._commit(batch)
            except Exception as exc:
                # Whatever went wrong, the committer must live on: a dead one would leave
                # every later write waiting for ever.
                log.exception("a batch of writes failed unexpectedly")
                failure = StoreUnavailable(f"the task database cannot be used: {exc}")
                for write in batch:
                    _settle(write.futures, error=failure)

    def _take_batch(self) -> list[Write]:
        """Everything queued, writes of the same statement merged; progress first."""
        queued, self._queue = self._queue, []
        if self._progress:
            rows = [(pct, msg, task_id) for task_id, (pct, msg) in self._progress.items()]
            self._progress = {}
            waiter, self._progress_waiter = self._progress_waiter, None
            queued.insert(0, Write(self._progress_sql, rows, False, [waiter] if waiter else []))
        merged: dict[str, Write] = {}
        batch: list[Write] = []
        for write in queued:
            if write.returning:  # atomic writes return too: never merged
                batch.append(write)
                continue
            same = merged.get(write.sql)
            if same is None:
                merged[write.sql] = write
                batch.append(write)
            else:
                same.params.extend(write.params)
                same.futures.extend(write.futures)
        counted = self._ended.take() if self._ended is not None else None
        if counted is not None:
            batch.append(counted)
        return batch

    async def _commit(self, batch: list[Write]) -> None:
        try:
            results = await self._run_batch(batch)
        except self._errors as exc:
            error = self._diagnose(exc)
            alone = len(batch) == 1 and not batch[0].splittable
            if error is None and alone and self._key_taken(exc):
                error = KeyTaken(str(exc))
            if error is not None or alone:
                failure = error or StoreUnavailable(f"the task database cannot be used: {exc}")
                for write in batch:
                    _settle(write.futures, error=failure)
                return
            for write in batch:
                if not write.splittable:
                    await self._commit([write])
                    continue
                for params, future in zip(write.params, write.futures, strict=True):
                    await self._commit([Write(write.sql, [params], write.returning, [future])])
            return
        for write, result in zip(batch, results, strict=True):
            _settle(write.futures, result=result)


def _settle(
    futures: list[asyncio.Future[Any]], *, result: Any = None, error: BaseException | None = None
) -> None:
    for future in futures:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class GroupCommitted:
    """The write verbs of `store.Store`, for an engine whose writes go through `_committer`.

    They hand back the committer's futures, not coroutines: an enqueue waiting for its commit
    then keeps one object fewer alive (thousands wait at once in a burst, and the garbage
    collector walks them all).
    """

    _committer: GroupCommitter
    _ended: EndedCounts

    def _count_ended(self, name: str, outcome: str, seconds: float | None) -> None:
        self._ended.add(name, outcome, seconds)

    def _write(self, sql: str, params: Sequence[Any]) -> asyncio.Future[None]:
        return self._committer.queue(sql, params, returning=False)

    def _write_returning(self, sql: str, params: Sequence[Any]) -> asyncio.Future[list[Any]]:
        return self._committer.queue(sql, params, returning=True)

    async def _write_many(self, sql: str, rows: list[Sequence[Any]]) -> None:
        await self._committer.queue_many(sql, rows)

    def _write_atomically(
        self, steps: Sequence[tuple[str, Sequence[Any]]]
    ) -> asyncio.Future[list[list[Any]]]:
        return self._committer.queue_atomically(steps)

    def report_progress(self, task_id: str, percent: float, message: str | None) -> None:
        self._committer.report_progress(task_id, float(percent), message)

    def progress_committed(self) -> asyncio.Future[None] | None:
        return self._committer.progress_committed()
