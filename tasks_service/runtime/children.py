"""Tasks that start tasks: `ctx.run`, `ctx.map` and `ctx.start`, durable across re-runs.

A child is created with the unique key (parent, call), where the call is its place among the
parent's calls or the `key=` it was given, in the same statement that stores it. When the
parent runs again (after a crash, or as a retry), the same call finds the child its earlier
run made: its stored result if it completed, else the parent waits for it. A child that
completed never runs again because its parent did. A re-run that makes a different call at
the same place gets WorkflowChanged: the call's hash (type and params) is kept with the key.

A parent waiting for children holds no slot. It is woken by a child's end in this process
at once, and by the watcher when another process or host ends one.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import Any, Protocol

from store import Store
from tasks import ChildFailed, Context, TaskRegistry, TaskStopped, WorkflowChanged
from tasks_service.models import IdempotencyConflict, NewTask, Task, TaskStatus, dump_json
from tasks_service.runtime.attempts import Attempt

log = logging.getLogger("tasks.runner")


class Parents(Protocol):
    """What the children need of the runner."""

    store: Store
    registry: TaskRegistry

    def attempt_of(self, task_id: str) -> Attempt: ...
    async def insert(self, new: NewTask) -> tuple[Task, bool]: ...
    def slot_released(self) -> contextlib.AbstractContextManager[None]: ...


class Children:
    def __init__(self, runner: Parents) -> None:
        self._runner = runner
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}

    async def start(self, parent: Context, task: Any, params: dict[str, Any], call: str) -> str:
        """Store the child of `parent`'s call `call` (or find the one an earlier run made)."""
        runner = self._runner
        attempt = runner.attempt_of(parent.task_id)
        name = task if isinstance(task, str) else getattr(task, "name", task)
        definition = runner.registry.get(name)  # UnknownTaskType: no such type
        validated = definition.validate(params)  # InvalidParams: nothing stored
        new = NewTask(
            name=definition.name,
            params=validated,
            priority=attempt.task.priority,
            max_attempts=definition.max_attempts,
            timeout=definition.timeout,
            unique_key=f"child:{attempt.task.id}:{call}",
            request_hash=_call_hash(definition.name, validated),
            parent_id=attempt.task.id,
        )
        try:
            child, _ = await runner.insert(new)
        except IdempotencyConflict:
            raise WorkflowChanged(
                f"call {call} of task {attempt.task.id} ({attempt.task.name}) started another "
                f"child before than {definition.name}({dump_json(validated)}): a re-run must "
                "make the same calls in the same order (or name them with key=)"
            ) from None
        return child.id

    async def results(self, parent: Context, child_ids: list[str]) -> list[Any]:
        """The children's results, in order, once all have ended (without holding a slot);
        ChildFailed for the first that did not complete."""
        attempt = self._runner.attempt_of(parent.task_id)
        unended = list(dict.fromkeys(child_ids))
        while unended:  # a word of an end is checked against the store before it counts
            futures = {child: self._watch(child) for child in unended}
            try:
                ended = await self._runner.store.ended_among(unended)
                for child in ended:
                    _resolve(futures[child])
                waiting = [f for f in futures.values() if not f.done()]
                if waiting:
                    with self._runner.slot_released():
                        await self._until_done(attempt, waiting)
                    ended = await self._runner.store.ended_among(unended)
            finally:
                for child, future in futures.items():
                    self._forget(child, future)
            unended = [child for child in unended if child not in ended]
        tasks = await self._runner.store.get_many(child_ids)
        results = []
        for child in child_ids:
            task = tasks.get(child)
            if task is None:
                raise ChildFailed(child, "?", "deleted", None)
            if task.status is not TaskStatus.COMPLETED:
                raise ChildFailed(child, task.name, task.status.value, task.error)
            results.append(task.result)
        return results

    async def _until_done(self, attempt: Attempt, waiting: list[asyncio.Future[None]]) -> None:
        every = asyncio.gather(*waiting)
        if attempt.definition.is_async:
            await every  # a cancel of the parent cancels this await
            return
        # A thread waits here through the loop; a stop of its task is told by an event.
        if attempt.stopping is None:
            attempt.stopping = asyncio.Event()
        if attempt.cancel_requested or attempt.shutting_down:
            attempt.stopping.set()
        stopped = asyncio.ensure_future(attempt.stopping.wait())
        try:
            await asyncio.wait({every, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if not every.done():
            every.cancel()
            raise TaskStopped(f"task {attempt.task.id} was asked to stop")

    # -- told of ends ----------------------------------------------------------------------

    @property
    def waited(self) -> bool:
        return bool(self._waiters)

    def ended(self, task_id: str) -> None:
        """A task's final state is stored (by this process)."""
        for future in self._waiters.get(task_id, ()):
            _resolve(future)

    async def look_again(self) -> None:
        """Another process may have ended some of the children waited for."""
        if self._waiters:
            for child in await self._runner.store.ended_among(list(self._waiters)):
                self.ended(child)

    def _watch(self, child: str) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(child, []).append(future)
        return future

    def _forget(self, child: str, future: asyncio.Future[None]) -> None:
        futures = self._waiters.get(child)
        if futures is not None:
            with contextlib.suppress(ValueError):
                futures.remove(future)
            if not futures:
                del self._waiters[child]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _call_hash(name: str, params: dict[str, Any]) -> str:
    return hashlib.sha256(dump_json([name, params]).encode()).hexdigest()
