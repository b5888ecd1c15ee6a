"""The store contract: every verb the runner and the service use, written once for every engine.

`Store` holds the verbs; each reads its statement from `self.sql` (`tasks_service.sql`: the
shared SQL, built in the engine's spelling). An engine (`tasks_service.engines`) gives its
connections, its schema, its claim statement, how it hears of other processes' commits and
how it numbers change events: only what genuinely differs. A new verb is one method here
(or in one of its groups, `tasks_service.verbs`: schedules, stats) plus, where engines
differ, one statement each.
"""

from __future__ import annotations

import abc
import asyncio
import heapq
import itertools
import json
import time
from collections.abc import Sequence
from typing import Any

from tasks_service.claims import ClaimPlan, claim_query
from tasks_service.models import (
    MAX_INTERRUPTIONS,
    FileRecord,
    IdempotencyConflict,
    InvalidRequest,
    KeyTaken,
    NewTask,
    Outcome,
    Rows,
    Task,
    TaskEvent,
    TaskStatus,
    TypeState,
    WorkerInfo,
)
from tasks_service.sql import (
    COLUMNS,
    SCHEDULES_LOCK,
    new_task_row,
    task_from_row,
    tick_statements,
)
from tasks_service.verbs.schedules import ScheduleVerbs
from tasks_service.verbs.stats import StatsVerbs


class StoreOpenError(RuntimeError):
    """The database cannot be opened as a task store; the service must not start."""


INTERRUPTED_ERROR = (
    f"interrupted {MAX_INTERRUPTIONS} times: the process running it died each time, "
    "so it will not be started again"
)


class Store(ScheduleVerbs, StatsVerbs):
    """The storage verbs; nothing above this knows which database it has."""

    # -- what each engine gives (besides the primitives of verbs.base.StoreIO) ------------

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, and create or migrate the schema."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Commit everything already asked for, then close."""

    @abc.abstractmethod
    def _count_ended(self, name: str, outcome: str, seconds: float | None) -> None:
        """Count an attempt's end into the transaction of the write queued just before it:
        its process knows how it ended and how long it ran, and one row per batch is far
        cheaper than a trigger per task. What no finish counts, a trigger does (see
        counted.CountedOutcome)."""

    @abc.abstractmethod
    def report_progress(self, task_id: str, percent: float, message: str | None) -> None:
        """Queue a progress update; only the latest per task reaches the next commit."""

    @abc.abstractmethod
    def progress_committed(self) -> asyncio.Future[None] | None:
        """A future done once the progress reported so far is committed (None: it is)."""

    @abc.abstractmethod
    async def changed(self) -> bool:
        """True when another process may have committed work or a cancel since the last call."""

    @abc.abstractmethod
    async def wait_for_change(self, timeout: float) -> None:
        """Until another process may have committed something, or `timeout` s."""

    @abc.abstractmethod
    async def last_event(self) -> int:
        """The position of the latest change event."""

    @abc.abstractmethod
    async def events_after(self, seq: int, limit: int = 1000) -> list[TaskEvent]:
        """Task changes committed after position `seq`, oldest first."""

    @abc.abstractmethod
    async def prune_events(self, up_to_seq: int) -> None:
        """Forget change events up to position `up_to_seq`."""

    async def ping(self) -> None:
        await self._read(self.sql.ping)

    # -- creating tasks --------------------------------------------------------------------

    async def create(self, new: NewTask, *, claim_for: str | None = None) -> tuple[Task, bool]:
        """Insert a task; with `claim_for`, insert it already running for that worker.

        With its unique key already taken, nothing is inserted: the task holding the key is
        returned with False if it was made from the same request, else IdempotencyConflict.
        """
        task, params = new_task_row(new, claim_for)
        if new.unique_key is None:
            await self._write(self.sql.insert, params)
            return task, True
        while True:
            if await self._write_returning(self.sql.insert_unique, params):
                return task, True
            rows = await self._read(self.sql.by_unique_key, (new.unique_key,))
            if rows:
                if rows[0][-1] != new.request_hash:
                    raise IdempotencyConflict(rows[0][0])
                return task_from_row(rows[0]), False
            # The holder of the key was deleted in between: the key is free again.

    async def create_many(self, news: Sequence[NewTask]) -> list[tuple[Task, bool]]:
        """Insert all these tasks in one transaction, or none of them.

        A task whose unique key is held by a task made from the same request is not made
        again: that task comes back with False, in its place. A key held for another
        request is IdempotencyConflict, and nothing is stored.
        """
        while True:
            held = await self._holders([n.unique_key for n in news if n.unique_key])
            made: list[tuple[Task, bool]] = []
            rows = Rows()
            first_with: dict[str, int] = {}
            for index, new in enumerate(news):
                key = new.unique_key
                if key is not None and key in held:
                    task, request_hash = held[key]
                    if request_hash != new.request_hash:
                        raise IdempotencyConflict(task.id)
                    made.append((task, False))
                elif key is not None and key in first_with:
                    earlier = first_with[key]
                    if news[earlier].request_hash != new.request_hash:
                        raise InvalidRequest(
                            f"items {earlier} and {index} have the same idempotency_key "
                            "and different bodies"
                        )
                    made.append((made[earlier][0], False))
                else:
                    task, params = new_task_row(new, None)
                    rows.append(params)
                    made.append((task, True))
                    if key is not None:
                        first_with[key] = index
            if not rows:
                return made
            try:
                await self._write_atomically([(self.sql.insert, rows)])
            except KeyTaken:
                continue  # another request took one of the keys meanwhile: look again
            return made

    async def _holders(self, keys: Sequence[str | None]) -> dict[str, tuple[Task, str | None]]:
        """The tasks holding these unique keys, with the hash of the request that made each."""
        held: dict[str, tuple[Task, str | None]] = {}
        for chunk in _chunks([k for k in keys if k is not None]):
            sql = self.sql.dialect.prepare(
                f"SELECT {COLUMNS}, request_hash, unique_key FROM tasks "
                f"WHERE unique_key IN ({', '.join('?' * len(chunk))})"
            )
            for row in await self._read(sql, chunk):
                held[row[-1]] = (task_from_row(row), row[-2])
        return held

    async def create_ticks(self, ticks: Sequence[tuple[NewTask, int]]) -> list[Task]:
        """Insert schedules' runs, each for the tick in its `unique_key`, in one transaction.

        Each comes with the revision of the schedule definition it was fired from (0: one in
        code). A run is not inserted when another process already made that tick, while an
        earlier run of its schedule is pending or running, while its schedule is paused, or
        when a schedule made at runtime was deleted or changed since that revision (see
        `tick_statements`). Returns the tasks inserted.

        Under the engine's schedule lock: two processes firing different ticks of a
        schedule at once must not both find no active run.
        """
        if not ticks:
            return []
        rows: list[Any] = []
        records: list[Any] = []
        made: dict[str, Task] = {}
        for new, revision in ticks:
            assert new.schedule_id is not None and new.unique_key is not None
            task, params = new_task_row(new, None)
            made[task.id] = task
            rows.extend((*params, revision))
            records.extend((new.schedule_id, task.run_at, new.unique_key))
        insert, record = tick_statements(self.sql.dialect, len(ticks))
        steps: list[tuple[str, Sequence[Any]]] = [(insert, rows), (record, records)]
        if self.sql.lock_schedule is not None:
            steps.insert(0, (self.sql.lock_schedule, (SCHEDULES_LOCK,)))
        results = await self._write_atomically(steps)
        return [made[row[0]] for row in results[-2]]

    # -- reading tasks ---------------------------------------------------------------------

    async def get(self, task_id: str) -> Task | None:
        rows = await self._read(self.sql.get, (task_id,))
        return task_from_row(rows[0]) if rows else None

    async def list(
        self,
        *,
        statuses: Sequence[str],
        name: str | None,
        before_id: str | None,
        limit: int,
        parent_id: str | None = None,
        schedule_id: str | None = None,
    ) -> list[Task]:
        """Newest first; `before_id` continues a previous page.

        Several statuses are read one indexed range each and merged: the database would
        otherwise sort every task with those statuses to find the newest few.
        """
        where = (name, schedule_id, before_id, limit, parent_id)
        if len(statuses) > 1:
            pages = [await self._list_one(s, *where) for s in statuses]
            return newest_first(pages, limit)
        return await self._list_one(statuses[0] if statuses else None, *where)

    async def _list_one(
        self,
        status: str | None,
        name: str | None,
        schedule_id: str | None,
        before_id: str | None,
        limit: int,
        parent_id: str | None,
    ) -> list[Task]:
        where: list[str] = []
        params: list[Any] = []
        for condition, value in (
            ("parent_id = ?", parent_id),
            ("status = ?", status),
            ("name = ?", name),
            ("schedule_id = ?", schedule_id),
            ("id < ?", before_id),
        ):
            if value is not None:
                where.append(condition)
                params.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = self.sql.dialect.prepare(
            f"SELECT {COLUMNS} FROM tasks {clause} ORDER BY id DESC LIMIT ?"
        )
        rows = await self._read(sql, (*params, limit))
        return [task_from_row(row) for row in rows]

    async def get_many(self, ids: Sequence[str]) -> dict[str, Task]:
        """The tasks with these ids that exist, by id."""
        found: dict[str, Task] = {}
        for chunk in _chunks(ids):
            sql = self.sql.dialect.prepare(
                f"SELECT {COLUMNS} FROM tasks WHERE id IN ({', '.join('?' * len(chunk))})"
            )
            found.update((t.id, t) for t in map(task_from_row, await self._read(sql, chunk)))
        return found

    async def ended_among(self, ids: Sequence[str]) -> set[str]:
        """Which of these tasks have ended (or are gone)."""
        ended: set[str] = set()
        for chunk in _chunks(ids):
            sql = self.sql.dialect.prepare(
                f"SELECT id, status FROM tasks WHERE id IN ({', '.join('?' * len(chunk))})"
            )
            rows = await self._read(sql, chunk)
            live = {row[0] for row in rows if row[1] in ("pending", "running")}
            ended.update(i for i in chunk if i not in live)
        return ended

    async def unfinished_children(self, parent_id: str) -> list[tuple[str, str]]:
        """(id, status) of a task's children that are pending or running."""
        rows = await self._read(self.sql.unfinished_children, (parent_id,))
        return [(row[0], row[1]) for row in rows]

    # -- running tasks ---------------------------------------------------------------------

    async def claim(self, owner: str, plan: ClaimPlan | int) -> list[Task]:
        """Mark due tasks running for `owner`, best first, as `plan` and the limits allow
        (see tasks_service.claims); a number: up to that many plain tasks."""
        if isinstance(plan, int):
            plan = ClaimPlan(plan)
        sql, params = claim_query(self.sql.dialect, plan, owner, time.time())
        lock = self.sql.dialect.lock_limited_claims
        if plan.has_limits and lock is not None:
            _, rows = await self._write_atomically([(lock, ()), (sql, params)])
        else:
            rows = await self._write_returning(sql, params)
        tasks = [task_from_row(row) for row in rows]
        tasks.sort(key=lambda t: (-t.priority, t.run_at, t.id))
        return tasks

    def finish(
        self, task: Task, outcome: Outcome, seconds: float | None = None
    ) -> asyncio.Future[None]:
        """Record how an attempt ended (it ran `seconds`); a no-op unless `task.owner` still
        runs it. Counted for GET /stats in the same transaction (see `_count_ended`).

        Queued at once (so the caller may move on, e.g. free the task's slot, and let the
        next claim share this write's transaction); the returned future is its commit.
        """
        now = time.time()
        pending = outcome.status is TaskStatus.PENDING
        ended_as = "retried" if pending else outcome.status.value
        committed = self._write(
            self.sql.finish,
            (
                outcome.status.value,
                outcome.result_json,
                outcome.error,
                now,
                None if pending else now,
                outcome.retry_at,
                ended_as,
                task.id,
                task.owner,
            ),
        )
        self._count_ended(task.name, ended_as, seconds)
        return committed

    async def release(self, task: Task) -> None:
        """Give a running task back (graceful shutdown), or cancel it if that was asked."""
        await self._write(self.sql.release, (time.time(), task.id, task.owner))

    async def unclaim(self, tasks: Sequence[Task]) -> None:
        """Give back tasks claimed but never started (the service began to stop meanwhile)."""
        await self._write_many(self.sql.unclaim, [(task.id, task.owner) for task in tasks])

    async def cancel_pending(self, task_id: str) -> Task | None:
        """Cancel a task that has not started; None if it is not pending."""
        rows = await self._write_returning(self.sql.cancel_pending, (time.time(), task_id))
        return task_from_row(rows[0]) if rows else None

    async def request_cancel(self, task_id: str) -> Task | None:
        """Ask the process running a task to stop it; None if it is not running."""
        rows = await self._write_returning(self.sql.request_cancel, (task_id,))
        return task_from_row(rows[0]) if rows else None

    async def cancel_requests(self, owner: str) -> list[str]:
        rows = await self._read(self.sql.cancel_requests, (owner,))
        return [row[0] for row in rows]

    async def running_for(self, owner: str) -> list[Task]:
        """The tasks stored as running for `owner`."""
        rows = await self._read(self.sql.running_for, (owner,))
        return [task_from_row(row) for row in rows]

    async def next_run_at(self) -> float | None:
        """When the next pending task that is not due yet comes due."""
        rows = await self._read(self.sql.next_run_at, (time.time(),))
        value: float | None = rows[0][0]
        return value

    async def has_due_in_lanes(self) -> bool:
        return bool(await self._read(self.sql.has_due_in_lanes, (time.time(),)))

    async def has_due(self) -> bool:
        return bool(await self._read(self.sql.has_due, (time.time(),)))

    # -- task types: limits and pauses -----------------------------------------------------

    async def declare_types(self, states: Sequence[TypeState]) -> None:
        """State each type's declaration (a pause, stored apart, is kept)."""
        rows = [
            (t.name, t.process, t.concurrency, t.rate_count, t.rate_period, t.limit_key)
            for t in states
        ]
        await self._write_many(self.sql.declare_type, rows)

    async def type_states(self) -> dict[str, TypeState]:
        rows = await self._read(self.sql.type_states)
        return {
            row[0]: TypeState(row[0], bool(row[1]), row[2], row[3], row[4], row[5], bool(row[6]))
            for row in rows
        }

    async def paused_types(self) -> frozenset[str]:
        return frozenset(row[0] for row in await self._read(self.sql.paused_types))

    async def set_type_paused(self, name: str, paused: bool) -> None:
        await self._write(self.sql.set_type_paused, (name, paused))

    async def running_counts(self) -> dict[str, int]:
        """Running tasks by type, in every process."""
        return {row[0]: row[1] for row in await self._read(self.sql.running_by_name)}

    async def lane_load(self, lane: str, since: float | None) -> tuple[int, int]:
        """A lane's running tasks, and its starts after `since` (0 without one)."""
        running = (await self._read(self.sql.lane_running, (lane,)))[0][0]
        if since is None:
            return running, 0
        return running, (await self._read(self.sql.lane_starts_since, (lane, since)))[0][0]

    async def pending_of_type(self, name: str) -> list[tuple[str, dict[str, Any], str | None]]:
        """(id, params, lane) of a type's pending tasks: to move them to other lanes."""
        rows = await self._read(self.sql.pending_of_type, (name,), scan=True)
        return [(row[0], json.loads(row[1]), row[2]) for row in rows]

    async def move_lanes(self, moves: Sequence[tuple[str | None, str]]) -> None:
        """(lane, task id) pairs: each pending task to its lane."""
        await self._write_many(self.sql.set_lane, list(moves))

    async def tidy_lanes(self, forget_before: float) -> None:
        """Forget starts older than their type's rate window, and lanes long idle."""
        now = time.time()
        await self._write(self.sql.prune_lane_starts, (now,))
        await self._write(self.sql.forget_idle_lanes, (forget_before,))

    async def not_yet_due(self) -> list[tuple[str, int]]:
        """("retry" or "run_at", count) of the pending tasks whose time has not come."""
        rows = await self._read(self.sql.not_yet_due, (time.time(),), scan=True)
        return [(row[0], row[1]) for row in rows]

    async def waiting_by_lane(self) -> list[tuple[str, str | None, int]]:
        """(type, lane, count) of the pending tasks that are due."""
        rows = await self._read(self.sql.waiting_by_lane, (time.time(),), scan=True)
        return [(row[0], row[1], row[2]) for row in rows]

    # -- workers ---------------------------------------------------------------------------

    async def register_worker(self, worker: WorkerInfo) -> None:
        await self._write(
            self.sql.register_worker, (worker.id, worker.host, worker.pid, worker.pid_started)
        )

    async def heartbeat(self, worker_id: str) -> bool:
        """Say this worker lives; False if others already took it for dead."""
        return bool(await self._write_returning(self.sql.heartbeat, (worker_id,)))

    async def workers(self) -> list[WorkerInfo]:
        """The workers, their `seen_at` moved onto this process's clock: leases are measured
        by the database's clock, whatever the hosts' clocks say."""
        rows = await self._read(self.sql.workers)
        skew = time.time() - rows[0][5] if rows else 0.0
        return [WorkerInfo(row[0], row[1], row[2], row[3], row[4] + skew) for row in rows]

    async def recover(self, worker_id: str) -> list[Task]:
        """Put a dead worker's running tasks back to pending (or give up on them)."""
        now = time.time()
        rows = await self._write_returning(
            self.sql.recover, (INTERRUPTED_ERROR, now, now, worker_id)
        )
        return [task_from_row(row) for row in rows]

    async def remove_worker(self, worker_id: str) -> None:
        await self._write(self.sql.remove_worker, (worker_id,))

    async def orphan_owners(self) -> list[str]:
        """Owners of running tasks that are not registered workers (they died unregistered)."""
        return [row[0] for row in await self._read(self.sql.orphan_owners)]

    # -- uploaded files --------------------------------------------------------------------

    async def add_file(self, record: FileRecord) -> None:
        await self._write(
            self.sql.add_file,
            (record.id, record.filename, record.size, record.sha256, record.created_at),
        )

    async def get_file(self, file_id: str) -> FileRecord | None:
        rows = await self._read(self.sql.get_file, (file_id,))
        return FileRecord(*rows[0]) if rows else None

    async def files_created_before(self, cutoff: float) -> list[str]:
        return [row[0] for row in await self._read(self.sql.files_created_before, (cutoff,))]

    async def forget_file_unless_in_use(self, file_id: str) -> bool:
        """Delete a file's record unless a pending or running task names it in its params."""
        rows = await self._write_returning(
            self.sql.forget_file_unless_in_use, (file_id, f'%"{file_id}"%')
        )
        return bool(rows)

    # -- metrics ---------------------------------------------------------------------------

    async def task_counts(self) -> list[tuple[str, str, int]]:
        """(status, name, count) of the tasks in the store."""
        rows = await self._read(self.sql.task_counts, scan=True)
        return [(row[0], row[1], row[2]) for row in rows]

    async def queue_stats(self) -> tuple[int, float | None]:
        """How many pending tasks are due now, and since when the oldest has waited."""
        rows = await self._read(self.sql.queue_stats, (time.time(),), scan=True)
        return rows[0][0], rows[0][1]

    async def add_metric_counts(self, deltas: dict[tuple[str, str, str], float]) -> None:
        rows = [(*key, float(value)) for key, value in deltas.items()]
        await self._write_many(self.sql.add_metric_counts, rows)

    async def metric_counts(self) -> list[tuple[str, str, str, float]]:
        rows = await self._read(self.sql.metric_counts, scan=True)
        return [(row[0], row[1], row[2], row[3]) for row in rows]

    # -- maintenance -----------------------------------------------------------------------

    async def purge(self, older_than: float, *, chunk: int = 1000) -> int:
        """Delete terminal tasks finished before `older_than`, in short transactions."""
        deleted = 0
        while True:
            rows = await self._write_returning(self.sql.purge, (older_than, chunk))
            deleted += len(rows)
            if len(rows) < chunk:
                return deleted


def _chunks(ids: Sequence[str], size: int = 500) -> list[list[str]]:
    items = list(ids)
    return [items[start : start + size] for start in range(0, len(items), size)]


def newest_first(pages: Sequence[Sequence[Task]], limit: int) -> list[Task]:
    """Pages each sorted newest first, merged into one page of at most `limit`."""
    merged = heapq.merge(*pages, key=lambda task: task.id, reverse=True)
    return list(itertools.islice(merged, limit))
