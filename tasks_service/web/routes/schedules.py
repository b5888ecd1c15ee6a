"""The schedule routes: list periodic schedules, pause, resume and run them now."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from tasks_service.web.bodies import task_response
from tasks_service.web.deps import SchedulerDep
from tasks_service.web.errors import errors
from tasks_service.web.schemas import ScheduleOut, TaskOut

router = APIRouter(tags=["schedules"])


@router.get("/schedules", response_model=list[ScheduleOut], responses=errors(401))
async def list_schedules(scheduler: SchedulerDep) -> list[dict[str, Any]]:
    """The periodic schedules, with their next run."""
    return await scheduler.describe_all()


@router.post(
    "/schedules/{schedule_id}/pause", response_model=ScheduleOut, responses=errors(401, 404)
)
async def pause_schedule(schedule_id: str, scheduler: SchedulerDep) -> dict[str, Any]:
    """Stop firing until resumed (kept across restarts, shared by every process)."""
    return await scheduler.set_paused(schedule_id, True)


@router.post(
    "/schedules/{schedule_id}/resume", response_model=ScheduleOut, responses=errors(401, 404)
)
async def resume_schedule(schedule_id: str, scheduler: SchedulerDep) -> dict[str, Any]:
    """Fire again from the next tick."""
    return await scheduler.set_paused(schedule_id, False)


@router.post(
    "/schedules/{schedule_id}/run",
    status_code=202,
    response_model=TaskOut,
    responses=errors(401, 404),
)
async def run_schedule(schedule_id: str, scheduler: SchedulerDep) -> Response:
    """Run the schedule's task now, paused or not."""
    task = await scheduler.run_now(schedule_id)
    return task_response(task, 202, Location=f"/tasks/{task.id}")
