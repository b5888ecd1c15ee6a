"""Why a pending task has not started: the first thing a user asks.

`run_at` (its start time has not come), `retry` (waiting out its backoff), `paused` (its type
is paused), `concurrency` or `rate_limit` (its lane is full or has used its starts), `slot`
(it could start, and waits for a free slot). Read from the store at the moment of asking.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable

from store import Store
from tasks import TaskRegistry
from tasks_service.models import Task, TaskStatus, UnknownTaskType
from tasks_service.runtime.lanes import Lanes

REASONS = ("run_at", "retry", "paused", "concurrency", "rate_limit", "slot")


class WaitExplainer:
    def __init__(self, store: Store, registry: TaskRegistry, lanes: Lanes) -> None:
        self.store = store
        self.registry = registry
        self.lanes = lanes

    async def explain(self, tasks: Iterable[Task]) -> None:
        """Set each task's `waiting_for` (None unless it is pending)."""
        now = 0.0
        held: dict[str, str] = {}  # lane -> its reason, read once per lane
        for task in tasks:
            if task.status is not TaskStatus.PENDING:
                task.waiting_for = None
                continue
            now = now or time.time()
            if task.run_at > now:
                task.waiting_for = "retry" if task.attempts else "run_at"
            else:
                task.waiting_for = await self._due_reason(task.name, task.lane, now, held)

    async def due_counts(self) -> Counter[str]:
        """How many pending tasks wait, by reason (for /metrics)."""
        now = time.time()
        counts: Counter[str] = Counter()
        held: dict[str, str] = {}
        for name, lane, count in await self.store.waiting_by_lane():
            counts[await self._due_reason(name, lane, now, held)] += count
        for reason, count in await self.store.not_yet_due():
            counts[reason] += count
        return counts

    async def _due_reason(
        self, name: str, lane: str | None, now: float, held: dict[str, str]
    ) -> str:
        if name in self.lanes.paused:
            return "paused"
        try:
            limits = self.registry.get(name).limits
        except UnknownTaskType:
            return "slot"
        if lane is None or not limits.limited:
            return "slot"
        if lane not in held:
            since = now - limits.rate.period if limits.rate else None
            running, started = await self.store.lane_load(lane, since)
            if limits.concurrency is not None and running >= limits.concurrency:
                held[lane] = "concurrency"
            elif limits.rate is not None and started >= limits.rate.count:
                held[lane] = "rate_limit"
            else:
                held[lane] = "slot"
        return held[lane]
