"""HTTP routes, request and response schemas, auth, and domain errors mapped to HTTP."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from events import ChangeFeed
from metrics import render as render_metrics
from models import (
    TERMINAL_STATUSES,
    IdempotencyConflict,
    InvalidParams,
    InvalidRequest,
    InvalidTransition,
    ScheduleNotFound,
    StoreUnavailable,
    Task,
    TaskError,
    TaskNotFound,
    TaskStatus,
    UnknownTaskType,
    is_task_id,
)
from scheduler import Scheduler
from service import TaskService
from tasks import TaskDefinition
from uploads import UploadTooLarge, save_upload

# -- schemas ---------------------------------------------------------------------------------


class TaskCreate(BaseModel):
    """The body of POST /tasks."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=200, description="a registered task type")
    params: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(0, ge=-1_000_000, le=1_000_000, description="higher runs first")
    delay: float | None = Field(None, ge=0, le=10 * 365 * 86400, description="seconds")
    run_at: AwareDatetime | None = Field(None, description="ISO 8601 with a time zone")
    max_attempts: int | None = Field(None, ge=1, le=1000)
    timeout: float | None = Field(None, gt=0, le=30 * 86400, description="seconds per attempt")

    @model_validator(mode="after")
    def _one_start_time(self) -> TaskCreate:
        if self.delay is not None and self.run_at is not None:
            raise ValueError("give delay or run_at, not both")
        return self


class TaskOut(BaseModel):
    """A task, as every endpoint that returns one shows it."""

    id: str
    name: str
    params: dict[str, Any]
    status: TaskStatus
    progress: float | None
    message: str | None
    result: Any
    error: str | None
    attempts: int
    max_attempts: int
    priority: int
    created_at: str
    run_at: str | None
    started_at: str | None
    finished_at: str | None
    cancel_requested: bool
    schedule_id: str | None


class TaskPage(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None


class TaskType(BaseModel):
    name: str
    description: str
    params_schema: dict[str, Any]
    max_attempts: int
    timeout: float | None
    schedule: str | None


class ScheduleOut(BaseModel):
    id: str
    task: str
    params: dict[str, Any]
    trigger: str
    next_run_at: str | None
    paused: bool


class Health(BaseModel):
    status: str
    worker: str
    running: int


class FileOut(BaseModel):
    id: str
    filename: str
    size: int
    sha256: str
    created_at: str


class ErrorOut(BaseModel):
    detail: Any


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Error answers: JSON `{"detail": ...}`, whatever the route's own content type."""
    content = {"application/json": {"schema": ErrorOut.model_json_schema()}}
    return {code: {"description": _ERROR_MEANINGS[code], "content": content} for code in codes}


_ERROR_MEANINGS = {
    400: "malformed request (e.g. a multipart body that cannot be parsed)",
    401: "missing or wrong bearer token",
    404: "no such task, schedule or file",
    409: "not possible in the task's current status, or Idempotency-Key reused",
    413: "body over the size limit",
    422: "invalid input",
}


# -- dependencies ----------------------------------------------------------------------------


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


def task_response(task: Task, status_code: int = 200, **headers: str) -> Response:
    return JSONResponse(task.to_json(), status_code=status_code, headers=headers or None)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


MAX_JSON_DEPTH = 64


async def read_json(request: Request) -> Any:
    """The body as JSON; anything unparsable, or nested deeper than 64 levels, is a 422."""
    body = await request.body()
    try:
        value = json.loads(body, parse_constant=_reject_constant)
    except RecursionError:
        value, message = None, f"JSON nested more than {MAX_JSON_DEPTH} levels deep"
    except ValueError as exc:
        value, message = None, f"malformed JSON: {exc}"
    else:
        if _deeper_than(value, MAX_JSON_DEPTH):
            message = f"JSON nested more than {MAX_JSON_DEPTH} levels deep"
        else:
            return value
    raise RequestValidationError(
        [{"type": "json_invalid", "loc": ["body"], "msg": message, "input": None}]
    )


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether lists and objects nest deeper than `limit` (checked without recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _validation_error(exc: ValidationError, *prefix: str | int) -> RequestValidationError:
    errors = json.loads(exc.json(include_url=False, include_context=False))
    for error in errors:
        error["loc"] = ["body", *prefix, *error["loc"]]
    return RequestValidationError(errors)


# -- routes ----------------------------------------------------------------------------------

tasks_router = APIRouter(tags=["tasks"])
schedules_router = APIRouter(tags=["schedules"])
files_router = APIRouter(tags=["files"])
metrics_router = APIRouter(tags=["metrics"])
health_router = APIRouter(tags=["health"])
openapi_router = APIRouter(include_in_schema=False)
# The page needs no token; the API calls it makes do.
dashboard_router = APIRouter(include_in_schema=False)
STATIC_DIR = Path(__file__).resolve().parent / "static"

_CREATE_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": TaskCreate.model_json_schema()}},
    }
}


@tasks_router.post(
    "/tasks",
    status_code=202,
    response_model=TaskOut,
    responses={
        200: {"model": TaskOut, "description": "the task an earlier request with this key made"},
        **_errors(401, 409, 413, 422),
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
        raise _validation_error(exc) from None
    request_hash = None
    if idempotency_key is not None:
        canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"))
        request_hash = hashlib.sha256(canonical.encode()).hexdigest()
    submitted = await service.submit(
        body.name,
        body.params,
        priority=body.priority,
        delay=body.delay,
        run_at=body.run_at,
        max_attempts=body.max_attempts,
        timeout=body.timeout,
        idempotency_key=idempotency_key,
        request_hash=request_hash,
    )
    task = submitted.task
    status_code = 202 if submitted.created else 200
    return task_response(task, status_code, Location=f"/tasks/{task.id}")


@tasks_router.get("/tasks", response_model=TaskPage, responses=_errors(401, 422))
async def list_tasks(
    service: ServiceDep,
    status: Annotated[list[TaskStatus] | None, Query(description="repeatable")] = None,
    name: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    """Tasks, newest first, a page at a time."""
    page = await service.list(statuses=status, name=name, limit=limit, cursor=cursor)
    items = [task.to_json() for task in page.items]
    return JSONResponse({"items": items, "next_cursor": page.next_cursor})


@tasks_router.get("/tasks/{task_id}", response_model=TaskOut, responses=_errors(401, 404))
async def get_task(task_id: str, request: Request) -> Response:
    """One task."""
    service: TaskService = request.app.state.service
    return task_response(await service.get(task_id))


@tasks_router.get(
    "/tasks/{task_id}/events",
    response_class=EventSourceResponse,
    responses=_errors(401, 404),
)
async def task_events(
    task: Annotated[Task, Depends(existing_task)], service: ServiceDep, feed: FeedDep
) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events: the task now, then each change, until it ends."""
    async with feed.subscribe(task.id) as changes:
        seen_up_to = await service.store.last_event()
        current = await service.get(task.id)  # read after subscribing: no change is missed
        last = current.to_json()
        yield ServerSentEvent(data=last, event="task", id=str(seen_up_to))
        if current.status in TERMINAL_STATUSES:
            return
        async for changed in changes:
            snapshot = changed.to_json()
            if snapshot == last or _is_older(changed, seen_up_to):
                continue
            last = snapshot
            yield ServerSentEvent(data=snapshot, event="task", id=str(changed.event_seq))
            if changed.status in TERMINAL_STATUSES:
                return


def _is_older(task: Task, seen_up_to: int) -> bool:
    return task.event_seq is not None and task.event_seq <= seen_up_to


@tasks_router.get("/events", response_class=EventSourceResponse, responses=_errors(401))
async def all_events(feed: FeedDep) -> AsyncIterator[ServerSentEvent]:
    """Server-Sent Events for the dashboard: each task as it changes (the latest per poll)."""
    async with feed.subscribe() as changes:
        yield ServerSentEvent(comment="connected")
        async for changed in changes:
            yield ServerSentEvent(data=changed.to_json(), event="task", id=str(changed.event_seq))


@tasks_router.post(
    "/tasks/{task_id}/cancel",
    response_model=TaskOut,
    responses={
        202: {"model": TaskOut, "description": "running: asked to stop"},
        **_errors(401, 404, 409),
    },
)
async def cancel_task(task_id: str, service: ServiceDep) -> Response:
    """Cancel a task: at once if pending (200), as soon as it stops if running (202)."""
    task, done = await service.cancel(task_id)
    return task_response(task, 200 if done else 202)


@tasks_router.post(
    "/tasks/{task_id}/retry",
    status_code=202,
    response_model=TaskOut,
    responses=_errors(401, 404, 409, 422),
)
async def retry_task(task_id: str, service: ServiceDep) -> Response:
    """Start a new task like a failed or cancelled one."""
    task = await service.retry(task_id)
    return task_response(task, 202, Location=f"/tasks/{task.id}")


@tasks_router.get("/task-types", response_model=list[TaskType], responses=_errors(401))
async def task_types(service: ServiceDep) -> list[dict[str, Any]]:
    """The task types this service runs, with the JSON Schema of their params."""
    return service.task_types()


@schedules_router.get("/schedules", response_model=list[ScheduleOut], responses=_errors(401))
async def list_schedules(scheduler: SchedulerDep) -> list[dict[str, Any]]:
    """The periodic schedules, with their next run."""
    return await scheduler.describe_all()


@schedules_router.post(
    "/schedules/{schedule_id}/pause", response_model=ScheduleOut, responses=_errors(401, 404)
)
async def pause_schedule(schedule_id: str, scheduler: SchedulerDep) -> dict[str, Any]:
    """Stop firing until resumed (kept across restarts, shared by every process)."""
    return await scheduler.set_paused(schedule_id, True)


@schedules_router.post(
    "/schedules/{schedule_id}/resume", response_model=ScheduleOut, responses=_errors(401, 404)
)
async def resume_schedule(schedule_id: str, scheduler: SchedulerDep) -> dict[str, Any]:
    """Fire again from the next tick."""
    return await scheduler.set_paused(schedule_id, False)


@schedules_router.post(
    "/schedules/{schedule_id}/run",
    status_code=202,
    response_model=TaskOut,
    responses=_errors(401, 404),
)
async def run_schedule(schedule_id: str, scheduler: SchedulerDep) -> Response:
    """Run the schedule's task now, paused or not."""
    task = await scheduler.run_now(schedule_id)
    return task_response(task, 202, Location=f"/tasks/{task.id}")


@files_router.post(
    "/files", status_code=201, response_model=FileOut, responses=_errors(400, 401, 413, 422)
)
async def upload_file(request: Request, file: UploadFile, service: ServiceDep) -> dict[str, Any]:
    """Upload a file (multipart, field `file`) for tasks to use by its id."""
    settings = request.app.state.settings
    try:
        record = await save_upload(
            file.file, file.filename or "", settings.data_dir, settings.max_upload, service.store
        )
    except UploadTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    return record.to_json()


@files_router.get("/files/{file_id}", response_model=FileOut, responses=_errors(401, 404))
async def get_file(file_id: str, service: ServiceDep) -> dict[str, Any]:
    """An upload's metadata."""
    record = await service.store.get_file(file_id) if is_task_id(file_id) else None
    if record is None:
        raise HTTPException(404, f"no uploaded file with id {file_id!r}")
    return record.to_json()


@metrics_router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, **_errors(401)},
)
async def metrics(service: ServiceDep) -> Response:
    """Prometheus text format: tasks by status and type, queue depth, durations, retries."""
    body = await render_metrics(service.store, service.runner.metrics)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@health_router.get("/health", response_model=Health, responses={503: {"model": ErrorOut}})
async def health(service: ServiceDep) -> dict[str, Any]:
    """200 while the database can be used, else 503."""
    await service.store.ping()
    return {"status": "ok", "worker": service.runner.worker_id, "running": service.runner.running}


@dashboard_router.get("/")
async def dashboard() -> FileResponse:
    """The dashboard: one static page, its CSS and JavaScript under /static."""
    return FileResponse(STATIC_DIR / "index.html", headers=_PAGE_HEADERS)


# The page loads only its own files and talks only to this service.
_PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@openapi_router.get("/openapi.json")
async def openapi_document(request: Request) -> dict[str, Any]:
    """The OpenAPI document, behind the token when TASKS_API_TOKEN is set."""
    document: dict[str, Any] = request.app.openapi()
    return document


# -- errors ----------------------------------------------------------------------------------

_STATUS_OF_ERROR: dict[type[TaskError], int] = {
    TaskNotFound: 404,
    ScheduleNotFound: 404,
    UnknownTaskType: 422,
    InvalidRequest: 422,
    InvalidTransition: 409,
    IdempotencyConflict: 409,
    StoreUnavailable: 503,
}


def install_error_handlers(app: FastAPI) -> None:
    """Map every domain error to its HTTP status, in this one place."""

    async def domain_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, InvalidParams):
            for error in exc.errors:
                error["loc"] = ["body", "params", *error["loc"]]
            return JSONResponse({"detail": exc.errors}, status_code=422)
        status_code = _STATUS_OF_ERROR.get(type(exc), 500)
        headers = {"Retry-After": "1"} if status_code == 503 else None
        return JSONResponse({"detail": str(exc)}, status_code=status_code, headers=headers)

    app.add_exception_handler(TaskError, domain_error)
