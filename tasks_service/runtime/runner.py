"""Runs tasks: claims them, runs each attempt, records how it ended.

`async def` tasks run as asyncio tasks, `def` tasks in daemon threads, `process=True` tasks
in worker processes. At most `concurrency` attempts run at once, and at most `processes` of
them in worker processes; a `def` task that timed out or was abandoned keeps its slot until
its thread really ends. The dispatcher is woken by an enqueue, by a freed slot
or by the next `run_at`, never by a polling loop. A watcher notices what other processes
committed (cancels, new tasks) and recovers the tasks of processes that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any

from store import Store
from tasks import Context, TaskRegistry
from tasks.context import Services
from tasks_service.config import Settings
from tasks_service.models import NewTask, Outcome, StoreUnavailable, Task, TaskStatus, WorkerInfo
from tasks_service.runtime import liveness
from tasks_service.runtime.attempts import Attempt, run_async, run_in_process, run_in_thread
from tasks_service.runtime.children import Children
from tasks_service.runtime.lanes import Lanes
from tasks_service.runtime.metrics import MetricsRecorder
from tasks_service.runtime.processes import WorkerPool
from tasks_service.runtime.watch import Watcher

log = logging.getLogger("tasks.runner")


_FORCED_STOP_WAIT = 5.0


class Runner:
    def __init__(
        self,
        store: Store,
        registry: TaskRegistry,
        settings: Settings,
        services: Services | None = None,
    ) -> None:
        """`services`: what the built-in tasks borrow from the service (`ctx.services`)."""
        self.store = store
        self.services = services
        self.metrics = MetricsRecorder()
        self.registry = registry
        self.settings = settings
        self.worker_id = f"{os.getpid()}-{secrets.token_hex(6)}"
        self._slots = settings.concurrency
        self._busy = 0
        # Process and limited tasks wait in lanes of their own (see runtime.lanes).
        self.lanes = Lanes(registry)
        self._process_slots = settings.processes
        self._process_busy = 0
        self._pool = WorkerPool(
            sorted({d.module for d in registry if d.process}),
            idle_limit=settings.processes,
            max_tasks=settings.process_max_tasks,
            max_rss=settings.process_max_memory_mb * 2**20,
            nice=settings.process_nice,
        )
        self._attempts: dict[str, Attempt] = {}
        self._wake = asyncio.Event()
        self._backlog = True  # due pending tasks may exist
        self._backlog_marks = 0  # bumped whenever work is noted, so a claim can't lose it
        self._recheck = True  # another process committed something: look again
        self._next_run_at: float | None = None
        self._accepting = False
        self._loops: list[asyncio.Task[None]] = []
        self._chores: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        # A claim whose commit failed may still have committed (the connection dropped after
        # COMMIT was sent): such tasks are stored running for us, and nothing runs them.
        self._claims_uncertain = False
        self._claims_in_flight = 0
        self._claims_started = 0
        self._settling: set[str] = set()  # ended attempts whose final write is not stored yet
        self._watcher = Watcher(store, settings, self, self.metrics)
        self.family = Children(self)  # ctx.run, map and start

    @property
    def running(self) -> int:
        """Attempts this process is running now."""
        return len(self._attempts)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.store.register_worker(self.worker_info())
        await self.lanes.declare(self.store)
        await self._watcher.recover_dead()
        self._accepting = True
        self._loops = [
            asyncio.create_task(self._dispatch_forever(), name="runner-dispatch"),
            asyncio.create_task(self._watcher.watch_forever(), name="runner-watch"),
        ]
        log.info("runner %s started: up to %d tasks at once", self.worker_id, self._slots)

    async def stop(self) -> None:
        """Start nothing new; give running tasks the grace period; hand back the rest."""
        self._accepting = False
        self._wake.set()
        dispatcher, watcher = self._loops or (None, None)
        if watcher is not None:
            watcher.cancel()
        if dispatcher is not None:
            # Not cancelled: a claim in flight would still commit, leaving its tasks
            # `running` and never started. The dispatcher ends after its current step.
            try:
                await asyncio.wait_for(dispatcher, _FORCED_STOP_WAIT)
            except (TimeoutError, StoreUnavailable):
                log.warning("the dispatcher did not stop in time")
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        running = [a.handle for a in self._attempts.values() if a.handle]
        if running:
            grace = self.settings.shutdown_grace
            log.info("waiting up to %g s for %d running tasks", grace, len(running))
            _, unfinished = await asyncio.wait(running, timeout=grace)
            if unfinished:
                await self._hand_back(unfinished)
        await self._pool.close()
        with contextlib.suppress(StoreUnavailable):
            await self.metrics.flush(self.store)
            await self.store.remove_worker(self.worker_id)
        log.info("runner %s stopped", self.worker_id)

    async def _hand_back(self, unfinished: set[asyncio.Task[None]]) -> None:
        log.info("%d tasks outlived the grace period: handing them back", len(unfinished))
        for attempt in list(self._attempts.values()):
            attempt.request_stop(shutdown=True)
        _, stuck = await asyncio.wait(unfinished, timeout=_FORCED_STOP_WAIT)
        # Only a task that swallows cancellation gets here: give its row back regardless.
        for attempt in list(self._attempts.values()):
            if attempt.handle in stuck:
                with contextlib.suppress(StoreUnavailable):
                    await self.store.release(attempt.task)

    # -- enqueue and cancel ----------------------------------------------------------------

    def insert(self, new: NewTask) -> Coroutine[Any, Any, tuple[Task, bool]]:
        """Store a new task; when a slot is free and nothing waits, it starts at once.

        Hands back `_insert`'s coroutine rather than awaiting it in one of its own: one
        object fewer alive per waiting enqueue.
        """
        return self._insert(new, self.store.create)

    async def insert_many(self, news: list[NewTask]) -> list[tuple[Task, bool]]:
        """Store many new tasks in one transaction (all or none); they start as claimed."""
        for new in news:
            new.lane = self.lanes.lane(new.name, new.params)
        stored = await self.store.create_many(news)
        for task, created in stored:
            if created:
                self._note_pending(task.run_at)
        return stored

    async def insert_ticks(self, ticks: Sequence[tuple[NewTask, int]]) -> list[Task]:
        """Store schedules' runs for their ticks (see `Store.create_ticks`); those inserted.

        Inserted pending (not claimed at insert, as one enqueue may be): a tick may bring
        thousands at once, and the dispatcher claims them as slots allow.
        """
        for new, _ in ticks:
            new.lane = self.lanes.lane(new.name, new.params)
        tasks = await self.store.create_ticks(ticks)
        if tasks:
            self._note_pending(min(task.run_at for task in tasks))
        return tasks

    async def _insert(
        self, new: NewTask, create: Callable[..., Awaitable[tuple[Task, bool]]]
    ) -> tuple[Task, bool]:
        due = new.run_at is None or new.run_at <= time.time()
        lanes = self.lanes
        new.lane = lanes.lane(new.name, new.params)
        process = new.name in lanes.process_names
        claim = (
            self._accepting
            and due
            and not self._backlog
            and self._busy < self._slots
            and lanes.startable_at_insert(new.name)
            and (not process or self._process_busy < self._process_slots)
        )
        if claim:
            self._take_slot(process)  # reserved before the insert: no other start can take it
            self._claim_begins()
        try:
            task, created = await create(new, claim_for=self.worker_id if claim else None)
        except BaseException:
            if claim:
                self._claims_uncertain = True
                self._free_slot(process)
            raise
        finally:
            if claim:
                self._claims_in_flight -= 1
        if claim and created and task and self._accepting:
            self._launch(task)
        elif claim and created and task:  # shutdown began while the insert committed
            self._free_slot(process)
            await self._unclaim([task])
        elif claim:
            self._free_slot(process)
        elif created and task:
            self._note_pending(task.run_at)
        return task, created

    async def _unclaim(self, tasks: list[Task]) -> None:
        if tasks:
            await with_store_retries(lambda: self.store.unclaim(tasks))
            log.info("%d tasks claimed as shutdown began were given back unstarted", len(tasks))

    def cancel_running(self, task_id: str) -> None:
        """Stop a task this process runs (its cancel is already stored)."""
        attempt = self._attempts.get(task_id)
        if attempt is None or attempt.cancel_requested:
            return
        attempt.request_stop()
        log.info("task %s (%s): cancel requested while running", task_id, attempt.task.name)

    def _note_pending(self, run_at: float) -> None:
        self._backlog_marks += 1
        if run_at <= time.time():
            self._backlog = True
        elif self._next_run_at is None or run_at < self._next_run_at:
            self._next_run_at = run_at
        self._wake.set()

    def _in_process(self, name: str) -> bool:
        """Whether tasks named so run in a worker process (and take a process slot)."""
        return name in self.lanes.process_names

    def _take_slot(self, process: bool) -> None:
        self._busy += 1
        if process:
            self._process_busy += 1

    def _free_slot(self, process: bool = False, laned: bool = False) -> None:
        self._busy -= 1
        if process:
            self._process_busy -= 1
        if laned:
            # A claim took no more from a lane than it allowed (or than there were process
            # slots): the next in line may be waiting for this one.
            self._backlog = True
        if self._backlog:
            self._wake.set()

    # -- the dispatcher --------------------------------------------------------------------

    async def _dispatch_forever(self) -> None:
        while self._accepting:
            self._wake.clear()
            try:
                await self._dispatch_once()
            except StoreUnavailable as exc:
                log.warning("cannot claim tasks: %s", exc)
                await asyncio.sleep(1)
                continue
            except Exception:
                # The dispatcher must outlive any surprise, or nothing would start again.
                log.exception("the dispatcher failed; it goes on")
                await asyncio.sleep(1)
                continue
            free = self._slots - self._busy
            if free > 0 and self._backlog and self._accepting:
                continue
            timeout = None
            if free > 0 and self._next_run_at is not None:
                timeout = max(0.0, self._next_run_at - time.time())
            try:
                await asyncio.wait_for(self._wake.wait(), timeout)
            except TimeoutError:  # the next run_at has come
                self._backlog = True
                self._next_run_at = None

    async def _dispatch_once(self) -> None:
        if self._recheck:
            self._recheck = False
            if await self.store.has_due():
                self._backlog = True
            else:
                self._next_run_at = await self.store.next_run_at()
        free = self._slots - self._busy
        if not (self._backlog and free > 0 and self._accepting):
            return
        marks = self._backlog_marks
        self._claim_begins()
        plan = self.lanes.plan(free, self._process_slots - self._process_busy)
        try:
            claimed = await self.store.claim(self.worker_id, plan)
        except BaseException:
            self._claims_uncertain = True
            raise
        finally:
            self._claims_in_flight -= 1
        if not self._accepting:  # shutdown began while the claim committed
            await self._unclaim(claimed)
            return
        for task in claimed:
            self._take_slot(self._in_process(task.name))
            self._launch(task)
        if len(claimed) < free and marks == self._backlog_marks:
            self._backlog = False
            next_run_at = await self.store.next_run_at()
            tick = self.lanes.rate_tick
            if tick is not None and await self.store.has_due_in_lanes():
                # Rate limits open with time, not with an event: look again soon.
                soon = time.time() + tick
                next_run_at = soon if next_run_at is None else min(next_run_at, soon)
            if marks == self._backlog_marks:
                self._next_run_at = next_run_at

    def _claim_begins(self) -> None:
        self._claims_in_flight += 1
        self._claims_started += 1

    async def reconcile_claims(self) -> None:
        """Give back tasks stored as running for us that we do not run (see
        `_claims_uncertain`). Skipped while a claim is in flight, whose tasks would look lost
        for the moment between its commit and their start."""
        started = self._claims_started
        if self._claims_in_flight:
            return
        stored = await self.store.running_for(self.worker_id)
        if self._claims_in_flight or self._claims_started != started:
            return
        lost = [t for t in stored if t.id not in self._attempts and t.id not in self._settling]
        self._claims_uncertain = False
        if lost:
            await self.store.unclaim(lost)
            log.warning(
                "%d tasks claimed by a commit that seemed to fail are pending again", len(lost)
            )
            self._backlog = True
            self._wake.set()

    # -- running one attempt ---------------------------------------------------------------

    def _launch(self, task: Task) -> None:
        """Run an attempt whose slot is already counted in `_busy`."""
        assert self._loop is not None
        if task.name not in self.registry:
            self._settling.add(task.id)
            chore = asyncio.create_task(self._fail_unknown(task))
            self._chores.add(chore)
            chore.add_done_callback(self._chores.discard)
            return
        definition = self.registry.get(task.name)
        context = Context(
            task.id, task.attempts, self.store, self._loop, self.services, self.family
        )
        attempt = Attempt(task, definition, context)
        self._attempts[task.id] = attempt
        log.debug("task %s (%s) attempt %d started", task.id, task.name, task.attempts)
        attempt.handle = asyncio.create_task(self._run(attempt), name=f"task-{task.id}")

    async def _run(self, attempt: Attempt) -> None:
        if attempt.definition.process:
            outcome = await run_in_process(attempt, self._pool)
        elif attempt.definition.is_async:
            outcome = await run_async(attempt)
        else:
            laned = attempt.task.lane is not None
            outcome = await run_in_thread(
                attempt, thread_ended=lambda: self._free_slot(laned=laned)
            )
        try:
            await self._conclude(attempt, outcome)
        finally:
            self._let_go(attempt)

    def attempt_of(self, task_id: str) -> Attempt:
        return self._attempts[task_id]

    @contextlib.contextmanager
    def slot_released(self) -> Iterator[None]:
        """A task waiting for its children gives its slot up meanwhile (so that they, and
        others, can run: no deadlock at TASKS_CONCURRENCY=1), and takes it back after."""
        self._busy -= 1
        self._backlog = True  # its children may be waiting for that very slot
        self._wake.set()
        try:
            yield
        finally:
            self._busy += 1

    async def _fail_unknown(self, task: Task) -> None:
        """A stored task whose type this process does not have (its module was removed)."""
        error = f"task type {task.name!r} is not registered in this service"
        log.error("task %s cannot run: %s", task.id, error)
        try:
            outcome = Outcome(TaskStatus.FAILED, error=error)
            await with_store_retries(lambda: self.store.finish(task, outcome))
            self.family.ended(task.id)
        finally:
            self._settling.discard(task.id)
            self._free_slot(self._in_process(task.name), task.lane is not None)

    async def _conclude(self, attempt: Attempt, outcome: Outcome | None) -> None:
        """Store how the attempt ended; a stored cancel wins over whatever it returned."""
        attempt.ended = time.monotonic()
        task = attempt.task
        if attempt.cancel_requested:
            outcome = Outcome(TaskStatus.CANCELLED)
        elif attempt.shutting_down or outcome is None:
            self._settling.add(task.id)
            try:
                await with_store_retries(lambda: self.store.release(task))
            finally:
                self._settling.discard(task.id)
            log.info("task %s (%s) handed back for the next start", task.id, task.name)
            return
        await self._record(attempt, outcome)

    async def _record(self, attempt: Attempt, outcome: Outcome) -> None:
        task = attempt.task
        self._settling.add(task.id)
        took = (attempt.ended or time.monotonic()) - attempt.started
        committed = self.store.finish(task, outcome, took)
        # Queued: the slot can take the next task now, whose claim then shares this commit.
        self._let_go(attempt)
        # Counted now, not after the commit: another process may already see the task ended
        # (and scrape /metrics) before this coroutine resumes. The write is retried until
        # it lands, so the count holds.
        self.metrics.attempt_ended(task.name, outcome.status, took)
        try:
            await committed
        except StoreUnavailable:
            await with_store_retries(lambda: self.store.finish(task, outcome, took))
        finally:
            self._settling.discard(task.id)
        if outcome.status is TaskStatus.PENDING:
            assert outcome.retry_at is not None
            self._note_pending(outcome.retry_at)
        else:
            self.family.ended(task.id)
            log.info(
                "task %s (%s) attempt %d %s in %.3f s",
                task.id,
                task.name,
                task.attempts,
                outcome.status,
                took,
            )

    def _let_go(self, attempt: Attempt) -> None:
        """Forget the attempt and free its slot (once), its outcome queued or stored."""
        if self._attempts.get(attempt.task.id) is attempt:
            del self._attempts[attempt.task.id]
        if attempt.holds_slot:
            attempt.holds_slot = False
            self._free_slot(attempt.definition.process, attempt.task.lane is not None)

    # -- what the watcher tells us -------------------------------------------------------

    def worker_info(self) -> WorkerInfo:
        pid = os.getpid()
        return WorkerInfo(
            id=self.worker_id,
            host=liveness.this_host(),
            pid=pid,
            pid_started=liveness.process_started(pid),
            seen_at=time.time(),
        )

    async def apply_changes(self) -> None:
        """Another process committed something: stop what it cancelled, see its pauses,
        look for work."""
        await self.lanes.refresh(self.store)
        await self.family.look_again()
        if self._attempts:
            for task_id in await self.store.cancel_requests(self.worker_id):
                self.cancel_running(task_id)
        self._recheck = True
        if self._busy < self._slots:
            self._wake.set()

    def claims_uncertain(self) -> bool:
        return self._claims_uncertain

    def work_appeared(self) -> None:
        """Due tasks appeared that no enqueue of ours noted (e.g. a dead worker's)."""
        self._backlog = True
        self._wake.set()


async def with_store_retries(write: Callable[[], Awaitable[Any]]) -> None:
    """A finished attempt must reach the store: retry while the database is unavailable."""
    delay = 0.1
    while True:
        try:
            await write()
            return
        except StoreUnavailable as exc:
            log.warning("cannot record a task's outcome yet (%s); retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
