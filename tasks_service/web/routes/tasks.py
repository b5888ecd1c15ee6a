"""The task routes: start, list, read, cancel and retry tasks, and the task types."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from tasks_service.models import TaskStatus
from tasks_service.service import TaskService
from tasks_service.web.bodies import read_json, task_response, validation_error
from tasks_service.web.deps import ServiceDep
from tasks_service.web.errors import errors
from tasks_service.web.schemas import (
    TaskBatch,
    TaskBatchOut,
    TaskCreate,
    TaskOut,
    TaskPage,
    TaskType,
    component,
)

router = APIRouter(tags=["tasks"])

_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": component(TaskCreate)}},
    }
}


@router.post(
    "/tasks",
    status_code=202,
    response_model=TaskOut,
    responses={
        200: {"model": TaskOut, "description": "the task an earlier request with this key made"},
        **errors(401, 409, 413, 422),
    },
    openapi_extra={
        **_CREATE_BODY,
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
            }
        ],
    },
)
async def create_task(request: Request) -> Response:
    """Start a task; it is stored before the answer is sent.

    The hot path: it reads what it needs from the request itself rather than through
    dependencies, which FastAPI would solve on every call.
    """
    service: TaskService = request.app.state.service
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
        raise RequestValidationError(
            [
                {
                    "type": "string_length",
                    "loc": ["header", "Idempotency-Key"],
                    "msg": "Idempotency-Key must be 1 to 255 characters",
                    "input": idempotency_key,
                }
            ]
        )
    raw = await read_json(request)
    try:
        body = TaskCreate.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc) from None
    request_hash = None if idempotency_key is None else hash_of(raw)
    created = await service.create(
        body.as_request(idempotency_key=idempotency_key, request_hash=request_hash)
    )
    task = created.task
    status_code = 202 if created.created else 200
    return task_response(task, status_code, Location=f"/tasks/{task.id}")


@router.post(
    "/tasks/batch",
    status_code=202,
    response_model=TaskBatchOut,
    responses=errors(401, 409, 413, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": component(TaskBatch)}},
        }
    },
)
async def create_tasks(request: Request) -> Response:
    """Start 1 to 1000 tasks in one transaction: all of them are stored, or none.

    An invalid item is a 422 whose detail names its index (`["body", "tasks", 3, ...]`); an
    item's `idempotency_key` used before with the same body gets that task back, with
    another body the whole batch is a 409.
    """
    service: TaskService = request.app.state.service
    raw = await read_json(request)
    try:
        body = TaskBatch.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc) from None
    requests = []
    for item, raw_item in zip(body.tasks, raw["tasks"], strict=True):
        key = item.idempotency_key
        request_hash = None
        if key is not None:  # the same hash as a POST /tasks of this body with the key
            request_hash = hash_of({k: v for k, v in raw_item.items() if k != "idempotency_key"})
        requests.append(item.as_request(idempotency_key=key, request_hash=request_hash))
    tasks = await service.enqueue_many(requests)
    return JSONResponse({"items": [task.to_json() for task in tasks]}, status_code=202)


def hash_of(body: Any) -> str:
    """What a request asked for, to tell a reused idempotency key from a repeat."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@router.get("/tasks", response_model=TaskPage, responses=errors(401, 422))
async def list_tasks(
    service: ServiceDep,
    status: Annotated[list[TaskStatus] | None, Query(description="repeatable")] = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
    parent_id: Annotated[str | None, Query(max_length=100, description="its children")] = None,
    schedule_id: Annotated[
        str | None, Query(max_length=200, description="the runs of one schedule")
    ] = None,
) -> Response:
    """Tasks, newest first, a page at a time."""
    page = await service.list(
        statuses=status,
        name=name,
        limit=limit,
        cursor=cursor,
        parent_id=parent_id,
        schedule_id=schedule_id,
    )
    items = [task.to_json() for task in page.items]
    return JSONResponse({"items": items, "next_cursor": page.next_cursor})


@router.get("/tasks/{task_id}", response_model=TaskOut, responses=errors(401, 404))
async def get_task(task_id: str, request: Request) -> Response:
    """One task."""
    service: TaskService = request.app.state.service
    return task_response(await service.get(task_id))


@router.post(
    "/tasks/{task_id}/cancel",
    response_model=TaskOut,
    responses={
        202: {"model": TaskOut, "description": "running: asked to stop"},
        **errors(401, 404, 409),
    },
)
async def cancel_task(task_id: str, service: ServiceDep) -> Response:
    """Cancel a task: at once if pending (200), as soon as it stops if running (202)."""
    task, done = await service.cancel(task_id)
    return task_response(task, 200 if done else 202)


@router.post(
    "/tasks/{task_id}/retry",
    status_code=202,
    response_model=TaskOut,
    responses=errors(401, 404, 409, 422),
)
async def retry_task(task_id: str, service: ServiceDep) -> Response:
    """Start a new task like a failed or cancelled one."""
    task = await service.retry(task_id)
    return task_response(task, 202, Location=f"/tasks/{task.id}")


@router.get("/task-types", response_model=list[TaskType], responses=errors(401))
async def list_task_types(service: ServiceDep) -> list[dict[str, Any]]:
    """The task types this service runs: params as JSON Schema, limits, pause, running."""
    return await service.task_types()


@router.post("/task-types/{name}/pause", response_model=TaskType, responses=errors(401, 404))
async def pause_task_type(name: str, service: ServiceDep) -> dict[str, Any]:
    """Start none of this type's pending tasks until resumed, in every process and host."""
    return await service.set_type_paused(name, True)


@router.post("/task-types/{name}/resume", response_model=TaskType, responses=errors(401, 404))
async def resume_task_type(name: str, service: ServiceDep) -> dict[str, Any]:
    """Start this type's pending tasks again."""
    return await service.set_type_paused(name, False)
