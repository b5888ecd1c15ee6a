"""Live task changes for event streams, from whichever process made them.

Every change of a task is recorded by SQLite triggers in `task_events`, in commit order. One
poller per process reads the new ones while someone listens and hands them to subscribers:
a task's own stream gets every change, the dashboard's stream the latest change of each task
per poll. Streams end when the task ends, or when the service shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from store import Store
from tasks_service.models import Task, TaskEvent

log = logging.getLogger("tasks.events")

_POLL_EVERY = 0.05
_QUEUE_LIMIT = 10_000
_CACHED_TASKS = 10_000


@dataclass(eq=False)
class Subscription:
    task_id: str | None  # None: every task; else that task and its children
    queue: asyncio.Queue[Task | None] = field(default_factory=lambda: asyncio.Queue(_QUEUE_LIMIT))
    overflowed: bool = False

    async def __aiter__(self) -> AsyncIterator[Task]:
        while True:
            task = await self.queue.get()
            if task is None:  # the feed closed
                return
            yield task


class ChangeFeed:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._subscriptions: set[Subscription] = set()
        self._position = 0
        self._tasks: OrderedDict[str, Task] = OrderedDict()  # the fields that never change
        self._poller: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    @contextlib.asynccontextmanager
    async def subscribe(self, task_id: str | None = None) -> AsyncIterator[Subscription]:
        """Changes committed from now on (of one task, or of all)."""
        subscription = Subscription(task_id)
        if self.closed.is_set():
            subscription.queue.put_nowait(None)
            yield subscription
            return
        if not self._subscriptions:
            self._position = await self.store.last_event()
        self._subscriptions.add(subscription)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll_while_listened(), name="change-feed")
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)

    def close(self) -> None:
        """End every stream now (shutdown): open streams must not hold the server up."""
        self.closed.set()
        for subscription in self._subscriptions:
            _put(subscription, None)

    async def _poll_while_listened(self) -> None:
        while self._subscriptions and not self.closed.is_set():
            try:
                events = await self.store.events_after(self._position)
            except Exception:
                log.exception("cannot read task changes; trying again")
                await asyncio.sleep(1)
                continue
            if not events:
                await asyncio.sleep(_POLL_EVERY)
                continue
            self._position = events[-1].seq
            await self._deliver(events)

    async def _deliver(self, events: list[TaskEvent]) -> None:
        latest: dict[str, Task] = {}
        for event in events:
            task = await self._task_after(event)
            if task is None:
                continue
            latest[task.id] = task
            for subscription in self._subscriptions:
                if subscription.task_id in (event.task_id, task.parent_id):
                    _put(subscription, task)  # a task's stream tells of its children too
        for task in latest.values():
            for subscription in self._subscriptions:
                if subscription.task_id is None:
                    _put(subscription, task)

    async def _task_after(self, event: TaskEvent) -> Task | None:
        base = self._tasks.get(event.task_id)
        if base is None:
            base = await self.store.get(event.task_id)
            if base is None:  # deleted since
                return None
            self._tasks[event.task_id] = base
            if len(self._tasks) > _CACHED_TASKS:
                self._tasks.popitem(last=False)
        else:
            self._tasks.move_to_end(event.task_id)
        return event.applied_to(base)


def _put(subscription: Subscription, task: Task | None) -> None:
    if subscription.overflowed:
        return
    try:
        subscription.queue.put_nowait(task)
    except asyncio.QueueFull:
        # A reader this far behind has lost track: end its stream; it can reconnect.
        subscription.overflowed = True
        log.warning("an event stream fell %d changes behind; closing it", _QUEUE_LIMIT)
        while not subscription.queue.empty():
            subscription.queue.get_nowait()
        subscription.queue.put_nowait(None)
