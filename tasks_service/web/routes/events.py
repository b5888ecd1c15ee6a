"""Server-Sent Events: one task's changes until it ends, or every task's for the dashboard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.sse import EventSourceResponse, ServerSentEvent

from tasks_service.models import TERMINAL_STATUSES, Task
from tasks_service.web.deps import FeedDep, ServiceDep, existing_task
from tasks_service.web.errors import errors

router = APIRouter(tags=["tasks"])


@router.get(
    "/tasks/{task_id}/events",
    response_class=EventSourceResponse,
    responses=errors(401, 404),
)
async def task_events(
    task: Annotated[Task, Depends(existing_task)], service: ServiceDep, feed: FeedDep
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: the task now, then each change (`event: task`) and each change of
    its children (`event: child`), until it ends."""
    async with feed.subscribe(task.id) as changes:
        seen_up_to = await service.store.last_event()
        current = await service.get(task.id)  # read after subscribing: no change is missed
        last = current.to_json()
        yield ServerSentEvent(data=last, event="task", id=str(seen_up_to))
        if current.status in TERMINAL_STATUSES:
            return
        async for changed in changes:
            await service.explain((changed,))
            if changed.id != task.id:  # one of its children
                if not _is_older(changed, seen_up_to):
                    yield ServerSentEvent(
                        data=changed.to_json(), event="child", id=str(changed.event_seq)
                    )
                continue
            snapshot = changed.to_json()
            if snapshot == last or _is_older(changed, seen_up_to):
                continue
            last = snapshot
            yield ServerSentEvent(data=snapshot, event="task", id=str(changed.event_seq))
            if changed.status in TERMINAL_STATUSES:
                return


def _is_older(task: Task, seen_up_to: int) -> bool:
    return task.event_seq is not None and task.event_seq <= seen_up_to


@router.get("/events", response_class=EventSourceResponse, responses=errors(401))
async def all_events(feed: FeedDep, service: ServiceDep) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events for the dashboard: each task as it changes (the latest per poll)."""
    async with feed.subscribe() as changes:
        yield ServerSentEvent(comment="connected")
        async for changed in changes:
            await service.explain((changed,))
            yield ServerSentEvent(data=changed.to_json(), event="task", id=str(changed.event_seq))
