"""The Python API of the service: enqueue, create, get, list, cancel, retry, and schedules
made at runtime. Routes call it; so can an app's own routes."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from store import Store
from tasks import TaskDefinition, TaskRegistry
from tasks_service.models import (
    TERMINAL_STATUSES,
    InvalidBatchItem,
    InvalidParams,
    InvalidRequest,
    InvalidTransition,
    NewTask,
    ScheduleInfo,
    StoreUnavailable,
    Task,
    TaskNotFound,
    TaskRequest,
    TaskStatus,
    TaskTypeNotFound,
    UnknownTaskType,
    is_id,
)
from tasks_service.runtime.runner import Runner
from tasks_service.runtime.stats import StatsReader
from tasks_service.runtime.waits import WaitExplainer
from tasks_service.schedules import RuntimeSchedules
from tasks_service.uploaded import check_uploaded_files


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Task]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Created:
    task: Task
    created: bool  # False: an earlier request with the same Idempotency-Key made it


class TaskService:
    def __init__(
        self,
        store: Store,
        runner: Runner,
        registry: TaskRegistry,
        schedules: RuntimeSchedules | None = None,
    ) -> None:
        self.store = store
        self.runner = runner
        self.registry = registry
        self.waits = WaitExplainer(store, registry, runner.lanes)
        self._schedules = schedules
        self._stats = StatsReader(store)

    async def enqueue(self, task_type: str | TaskDefinition, /, **params: Any) -> Task:
        """Start a task with default options: `await service.enqueue("sleep", seconds=3)`."""
        name = task_type if isinstance(task_type, str) else task_type.name
        definition = self.registry.get(name)
        request = TaskRequest(name, params)
        if definition.file_params:
            return (await self.create(request)).task
        # The common case awaits the runner directly: a burst of enqueues keeps one
        # coroutine fewer each alive while they wait for their commit.
        task, _ = await self.runner.insert(self._new_task(definition, request))
        await self.waits.explain((task,))
        return task

    async def create(self, request: TaskRequest) -> Created:
        """Validate and store a task; UnknownTaskType, InvalidParams or InvalidRequest before
        anything is stored."""
        definition = self.registry.get(request.name)
        new = self._new_task(definition, request)
        if definition.file_params:
            await check_uploaded_files(self.store, definition, new.params)
        task, created = await self.runner.insert(new)
        await self.waits.explain((task,))
        return Created(task, created)

    async def enqueue_many(self, requests: Sequence[TaskRequest | dict[str, Any]]) -> list[Task]:
        """Validate and store many tasks in one transaction: all of them, or (InvalidBatchItem
        naming the first bad item, or IdempotencyConflict) none. A request given as a dict
        has TaskRequest's fields: `{"name": "send_email", "params": {...}}`."""
        news = []
        for index, item in enumerate(requests):
            request = item if isinstance(item, TaskRequest) else _as_request(index, item)
            try:
                definition = self.registry.get(request.name)
                new = self._new_task(definition, request)
                if definition.file_params:
                    await check_uploaded_files(self.store, definition, new.params)
            except (UnknownTaskType, InvalidParams, InvalidRequest) as exc:
                raise InvalidBatchItem(index, exc) from None
            news.append(new)
        tasks = [task for task, _ in await self.runner.insert_many(news)]
        await self.waits.explain(tasks)
        return tasks

    def _new_task(self, definition: TaskDefinition, request: TaskRequest) -> NewTask:
        """The task to store, its params and options validated (InvalidParams, InvalidRequest)."""
        validated = definition.validate(request.params)
        delay, run_at = request.delay, request.run_at
        if delay is not None and run_at is not None:
            raise InvalidRequest("give delay or run_at, not both")
        if delay is not None and delay < 0:
            raise InvalidRequest("delay must not be negative")
        if run_at is not None and run_at.tzinfo is None:
            raise InvalidRequest("run_at needs a time zone, e.g. 2030-01-01T00:00:00Z")
        start_at: float | None = None
        if delay:
            start_at = time.time() + delay
        elif run_at is not None:
            start_at = run_at.timestamp()
        key = request.idempotency_key
        return NewTask(
            name=definition.name,
            params=validated,
            priority=request.priority,
            run_at=start_at,
            max_attempts=request.max_attempts or definition.max_attempts,
            timeout=request.timeout or definition.timeout,
            unique_key=None if key is None else f"key:{key}",
            request_hash=request.request_hash,
        )

    async def get(self, task_id: str) -> Task:
        task = await self.store.get(task_id) if is_id(task_id) else None
        if task is None:
            raise TaskNotFound(task_id)
        await self.waits.explain((task,))
        return task

    async def list(
        self,
        *,
        statuses: list[TaskStatus] | None = None,
        name: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        parent_id: str | None = None,
        schedule_id: str | None = None,
    ) -> Page:
        """Newest first; `cursor` is a previous page's `next_cursor`."""
        if cursor is not None and not is_id(cursor):
            raise InvalidRequest("cursor is not one this service gave out")
        wanted = sorted({s.value for s in statuses or ()})
        tasks = await self.store.list(
            statuses=wanted,
            name=name,
            schedule_id=schedule_id,
            before_id=cursor,
            limit=limit + 1,
            parent_id=parent_id,
        )
        more = len(tasks) > limit
        items = tasks[:limit]
        await self.waits.explain(items)
        return Page(items, items[-1].id if more else None)

    async def cancel(self, task_id: str) -> tuple[Task, bool]:
        """Cancel a task: (task, True) if it is now cancelled, (task, False) if asked to stop."""
        if not is_id(task_id):
            raise TaskNotFound(task_id)
        for _ in range(3):  # a task may start between two looks: look again
            task = await self.store.cancel_pending(task_id)
            if task is not None:
                self.runner.family.ended(task_id)
                await self._cancel_children(task_id)
                return task, True
            task = await self.store.request_cancel(task_id)
            if task is not None:
                self.runner.cancel_running(task_id)
                await self._cancel_children(task_id)
                return task, False
            task = await self.store.get(task_id)
            if task is None:
                raise TaskNotFound(task_id)
            if task.status in TERMINAL_STATUSES:
                raise InvalidTransition(task, "cancel")
        raise InvalidTransition(task, "cancel")

    async def _cancel_children(self, parent_id: str) -> None:
        """A cancel reaches a task's unfinished children (and theirs)."""
        for child_id, _ in await self.store.unfinished_children(parent_id):
            with contextlib.suppress(InvalidTransition, TaskNotFound):
                await self.cancel(child_id)

    async def retry(self, task_id: str) -> Task:
        """A new task with the same type, params and options as a failed or cancelled one."""
        old = await self.get(task_id)
        if old.status not in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            raise InvalidTransition(old, "retry")
        request = TaskRequest(
            old.name,
            old.params,
            priority=old.priority,
            max_attempts=old.max_attempts,
            timeout=old.timeout,
        )
        return (await self.create(request)).task

    async def explain(self, tasks: Iterable[Task]) -> None:
        """Fill in why each pending task has not started (`waiting_for`)."""
        await self.waits.explain(tasks)

    async def stats(self, minutes: int = 60) -> dict[str, list[dict[str, Any]]]:
        """The last `minutes` minutes at a glance (1 to 1440): `{"series", "by_type"}`, true
        for the whole service (see tasks_service.runtime.stats)."""
        return json.loads(await self.stats_json(minutes))  # type: ignore[no-any-return]

    async def stats_json(self, minutes: int = 60) -> bytes:
        """The same, as the JSON GET /stats answers."""
        if not 1 <= minutes <= 1440:
            raise InvalidRequest("minutes must be 1 to 1440")
        return await self._stats.glance_json(minutes)

    async def task_types(self) -> list[dict[str, Any]]:
        """Each type's declaration, with its pause state and how many run now, anywhere."""
        running = await self.store.running_counts()
        paused = await self.store.paused_types()
        return [self._describe(d, paused, running) for d in self.registry]

    async def task_type(self, name: str) -> dict[str, Any]:
        definition = self._type(name)
        running = await self.store.running_counts()
        return self._describe(definition, await self.store.paused_types(), running)

    async def set_type_paused(self, name: str, paused: bool) -> dict[str, Any]:
        """Pause or resume a task type in every process and host (kept across restarts)."""
        self._type(name)
        await self.runner.lanes.set_paused(self.store, name, paused)
        if not paused:
            self.runner.work_appeared()
        return await self.task_type(name)

    def _type(self, name: str) -> TaskDefinition:
        if name not in self.registry:
            raise TaskTypeNotFound(name, self.registry.names())
        return self.registry.get(name)

    @staticmethod
    def _describe(
        definition: TaskDefinition, paused: frozenset[str], running: dict[str, int]
    ) -> dict[str, Any]:
        return {
            **definition.describe(),
            "paused": definition.name in paused,
            "running": running.get(definition.name, 0),
        }

    # -- schedules -------------------------------------------------------------------------

    @property
    def schedules(self) -> RuntimeSchedules:
        if self._schedules is None:
            raise StoreUnavailable("schedules are not available before the service has started")
        return self._schedules

    async def create_schedule(
        self,
        task_type: str | TaskDefinition,
        /,
        *,
        id: str | None = None,
        params: dict[str, Any] | None = None,
        every: float | None = None,
        cron: str | None = None,
        tz: str | None = None,
        paused: bool = False,
    ) -> ScheduleInfo:
        """A periodic schedule made at runtime, stored in the database: `every` seconds
        (aligned to the epoch) or a crontab `cron` read in `tz` (UTC by default).

        `await service.create_schedule(send_email, id="reminder:42", cron="0 9 * * 1",
        params={...})`. Validated before anything is stored (UnknownTaskType, InvalidParams,
        InvalidSchedule); ScheduleExists if the id is taken. The id is generated when None.
        """
        return await self.schedules.create(
            task_type, schedule_id=id, params=params, every=every, cron=cron, tz=tz, paused=paused
        )

    async def update_schedule(
        self,
        schedule_id: str,
        /,
        *,
        params: dict[str, Any] | None = None,
        every: float | None = None,
        cron: str | None = None,
        tz: str | None = None,
        paused: bool | None = None,
    ) -> ScheduleInfo:
        """Change a schedule made at runtime (None: unchanged); ScheduleInCode for one in code."""
        return await self.schedules.update(
            schedule_id, params=params, every=every, cron=cron, tz=tz, paused=paused
        )

    async def delete_schedule(self, schedule_id: str, /) -> None:
        """Delete a schedule made at runtime: no tick of it fires after this, anywhere."""
        await self.schedules.delete(schedule_id)

    async def get_schedule(self, schedule_id: str, /) -> ScheduleInfo:
        return await self.schedules.scheduler.describe(schedule_id)

    async def list_schedules(self) -> list[ScheduleInfo]:
        return await self.schedules.scheduler.describe_all()


def _as_request(index: int, item: dict[str, Any]) -> TaskRequest:
    try:
        return TaskRequest(**item)
    except TypeError as exc:
        raise InvalidBatchItem(index, InvalidRequest(str(exc))) from None
