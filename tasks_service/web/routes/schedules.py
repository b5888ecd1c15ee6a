"""The schedule routes: list, create, change and delete periodic schedules; pause, resume and
run them now."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from tasks_service.web.bodies import read_json, task_response, validation_error
from tasks_service.web.deps import SchedulerDep, ServiceDep
from tasks_service.web.errors import errors
from tasks_service.web.schemas import ScheduleCreate, ScheduleOut, ScheduleUpdate, TaskOut

router = APIRouter(tags=["schedules"])


def _body_of(model: type[BaseModel]) -> dict[str, Any]:
    """The OpenAPI request body of a route that reads its JSON itself (see read_json)."""
    content = {"application/json": {"schema": model.model_json_schema()}}
    return {"requestBody": {"required": True, "content": content}}


async def _read(request: Request, model: type[BaseModel]) -> Any:
    try:
        return model.model_validate(await read_json(request))
    except ValidationError as exc:
        raise validation_error(exc) from None


@router.get(
    "/schedules",
    response_model=list[ScheduleOut],
    responses=errors(401),
)
async def list_schedules(service: ServiceDep) -> Response:
    """The periodic schedules, those in code first, with their next run."""
    return JSONResponse([info.to_json() for info in await service.list_schedules()])


@router.post(
    "/schedules",
    status_code=201,
    response_model=ScheduleOut,
    responses=errors(401, 409, 413, 422),
    openapi_extra=_body_of(ScheduleCreate),
)
async def create_schedule(request: Request, service: ServiceDep) -> Response:
    """Make a schedule; stored, it fires in every process and host, and survives restarts."""
    body: ScheduleCreate = await _read(request, ScheduleCreate)
    info = await service.create_schedule(
        body.task,
        id=body.id,
        params=body.params,
        every=body.every,
        cron=body.cron,
        tz=body.tz,
        paused=body.paused,
    )
    return JSONResponse(
        info.to_json(), status_code=201, headers={"Location": f"/schedules/{info.id}"}
    )


@router.get(
    "/schedules/{schedule_id}",
    response_model=ScheduleOut,
    responses=errors(401, 404),
)
async def get_schedule(schedule_id: str, service: ServiceDep) -> Response:
    """One schedule."""
    return JSONResponse((await service.get_schedule(schedule_id)).to_json())


@router.patch(
    "/schedules/{schedule_id}",
    response_model=ScheduleOut,
    responses=errors(401, 404, 409, 413, 422),
    openapi_extra=_body_of(ScheduleUpdate),
)
async def update_schedule(schedule_id: str, request: Request, service: ServiceDep) -> Response:
    """Change a schedule made over the API; its next tick uses the change, everywhere."""
    body: ScheduleUpdate = await _read(request, ScheduleUpdate)
    info = await service.update_schedule(
        schedule_id,
        params=body.params,
        every=body.every,
        cron=body.cron,
        tz=body.tz,
        paused=body.paused,
    )
    return JSONResponse(info.to_json())


@router.delete(
    "/schedules/{schedule_id}",
    status_code=204,
    response_class=Response,
    responses=errors(401, 404, 409),
)
async def delete_schedule(schedule_id: str, service: ServiceDep) -> Response:
    """Delete a schedule made over the API; no tick of it fires after this, anywhere."""
    await service.delete_schedule(schedule_id)
    return Response(status_code=204)


@router.post(
    "/schedules/{schedule_id}/pause",
    response_model=ScheduleOut,
    responses=errors(401, 404),
)
async def pause_schedule(schedule_id: str, scheduler: SchedulerDep) -> Response:
    """Stop firing until resumed (kept across restarts, shared by every process)."""
    return JSONResponse((await scheduler.set_paused(schedule_id, True)).to_json())


@router.post(
    "/schedules/{schedule_id}/resume",
    response_model=ScheduleOut,
    responses=errors(401, 404),
)
async def resume_schedule(schedule_id: str, scheduler: SchedulerDep) -> Response:
    """Fire again from the next tick."""
    return JSONResponse((await scheduler.set_paused(schedule_id, False)).to_json())


@router.post(
    "/schedules/{schedule_id}/run",
    status_code=202,
    response_model=TaskOut,
    responses=errors(401, 404),
)
async def run_schedule(schedule_id: str, scheduler: SchedulerDep, service: ServiceDep) -> Response:
    """Run the schedule's task now, paused or not."""
    task = await scheduler.run_now(schedule_id)
    await service.explain((task,))
    return task_response(task, 202, Location=f"/tasks/{task.id}")
