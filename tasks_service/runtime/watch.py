"""Watching the other processes that share the store: their commits, their deaths, the events.

One loop per runner: it waits for the engine to say another process committed something
(SQLite: every watch interval; PostgreSQL: a NOTIFY), then tells the runner; it beats this
worker's heartbeat, flushes its metrics, samples the queue depth for GET /stats, puts the
tasks of dead workers back, and prunes change events nobody will replay and minutes of
stats older than a day.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Protocol

from store import Store
from tasks_service.config import Settings
from tasks_service.models import StoreUnavailable, WorkerInfo
from tasks_service.runtime import liveness
from tasks_service.runtime.metrics import MetricsRecorder
from tasks_service.runtime.stats import forget_old_minutes, sample_queue_depth

log = logging.getLogger("tasks.runner")

_HEARTBEAT_EVERY = 1.0
_SWEEP_EVERY = 1.0
_EVENTS_SAMPLE_EVERY = 10.0
_EVENTS_KEPT_FOR = 60.0
_LANES_KEPT_FOR = 300.0  # a lane with nothing waiting or running is forgotten after this


class Watched(Protocol):
    """What the watcher tells the runner and asks of it."""

    worker_id: str

    def worker_info(self) -> WorkerInfo: ...
    async def apply_changes(self) -> None: ...
    def claims_uncertain(self) -> bool: ...
    async def reconcile_claims(self) -> None: ...
    def work_appeared(self) -> None: ...


class Watcher:
    def __init__(
        self, store: Store, settings: Settings, runner: Watched, metrics: MetricsRecorder
    ) -> None:
        self.store = store
        self.settings = settings
        self.runner = runner
        self.metrics = metrics

    async def watch_forever(self) -> None:
        last_beat = last_sweep = time.monotonic()
        event_marks: collections.deque[tuple[float, int]] = collections.deque()
        while True:
            try:
                await self.store.wait_for_change(self.settings.watch_interval)
            except StoreUnavailable:
                await asyncio.sleep(self.settings.watch_interval)
            try:
                now = time.monotonic()
                if now - last_beat >= _HEARTBEAT_EVERY:
                    last_beat = now
                    await self._heartbeat()
                    await self.metrics.flush(self.store)
                    await sample_queue_depth(self.store)
                if await self.store.changed():
                    await self.runner.apply_changes()
                if self.runner.claims_uncertain():
                    await self.runner.reconcile_claims()
                if now - last_sweep >= _SWEEP_EVERY:
                    last_sweep = now
                    await self.recover_dead()
                if not event_marks or now - event_marks[-1][0] >= _EVENTS_SAMPLE_EVERY:
                    await self._prune_events(event_marks, now)
                    await self.store.tidy_lanes(forget_before=time.time() - _LANES_KEPT_FOR)
                    await forget_old_minutes(self.store)
            except StoreUnavailable as exc:
                log.warning("watcher cannot reach the task store: %s", exc)
            except Exception:
                log.exception("watcher failed; it goes on")

    async def _prune_events(self, marks: collections.deque[tuple[float, int]], now: float) -> None:
        """Change events are for live streams: drop those older than about a minute."""
        marks.append((now, await self.store.last_event()))
        old = None
        while marks and now - marks[0][0] >= _EVENTS_KEPT_FOR:
            old = marks.popleft()
        if old is not None:
            await self.store.prune_events(old[1])

    async def _heartbeat(self) -> None:
        if not await self.store.heartbeat(self.runner.worker_id):
            log.warning("runner %s was taken for dead by another process", self.runner.worker_id)
            await self.store.register_worker(self.runner.worker_info())

    async def recover_dead(self) -> None:
        """Put the running tasks of dead workers (and of owners never registered) back."""
        now = time.time()
        dead = [w.id for w in await self.store.workers() if self._is_dead(w, now)]
        dead.extend(await self.store.orphan_owners())
        for worker_id in dead:
            recovered = await self.store.recover(worker_id)
            await self.store.remove_worker(worker_id)
            for task in recovered:
                log.warning(
                    "task %s (%s) was running in process %s, which died: now %s",
                    task.id,
                    task.name,
                    worker_id,
                    task.status,
                )
            if recovered:
                self.runner.work_appeared()

    def _is_dead(self, worker: WorkerInfo, now: float) -> bool:
        if worker.id == self.runner.worker_id:
            return False
        if worker.host == liveness.this_host():
            return not liveness.is_alive(worker.pid, worker.pid_started)
        return now - worker.seen_at > self.settings.lease_seconds
