"""FastAPI dependencies: the service and its parts, and `AddTask` for an app's own routes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from scheduler import Scheduler
from tasks import TaskDefinition
from tasks_service.models import Task
from tasks_service.runtime.changes import ChangeFeed
from tasks_service.service import TaskService


async def get_service(request: Request) -> TaskService:
    service: TaskService = request.app.state.service
    return service


ServiceDep = Annotated[TaskService, Depends(get_service)]


class TaskAdder:
    """Starts tracked tasks from any route, as easily as BackgroundTasks.add_task.

    `task_id = await add_task(send_email, to=..., subject=..., body=...)`: the task is stored
    before this returns, so it is as durable, visible and cancellable as one from POST /tasks.
    """

    def __init__(self, service: TaskService) -> None:
        self._service = service

    async def __call__(self, task_type: str | TaskDefinition, /, **params: Any) -> str:
        task = await self._service.enqueue(task_type, **params)
        return task.id


async def get_task_adder(service: ServiceDep) -> TaskAdder:
    return TaskAdder(service)


AddTask = Annotated[TaskAdder, Depends(get_task_adder)]


async def get_feed(request: Request) -> ChangeFeed:
    feed: ChangeFeed = request.app.state.feed
    return feed


FeedDep = Annotated[ChangeFeed, Depends(get_feed)]


async def existing_task(task_id: str, service: ServiceDep) -> Task:
    """The task named in the path; a 404 before any stream starts."""
    return await service.get(task_id)


async def get_scheduler(request: Request) -> Scheduler:
    scheduler: Scheduler = request.app.state.scheduler
    return scheduler


SchedulerDep = Annotated[Scheduler, Depends(get_scheduler)]
