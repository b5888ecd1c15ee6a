"""Domain errors mapped to HTTP in one place, and the error answers each route documents."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tasks_service.models import (
    IdempotencyConflict,
    InvalidBatchItem,
    InvalidParams,
    InvalidRequest,
    InvalidSchedule,
    InvalidTransition,
    ScheduleExists,
    ScheduleInCode,
    ScheduleNotFound,
    StoreUnavailable,
    TaskError,
    TaskNotFound,
    TaskTypeNotFound,
    UnknownTaskType,
)
from tasks_service.web.schemas import ErrorOut, component

# Every error answer's body: one schema, referred to by every error answer.
ERROR_SCHEMA = component(ErrorOut)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Error answers: JSON `{"detail": ...}` (ErrorOut), whatever the route's content type."""
    content = {"application/json": {"schema": dict(ERROR_SCHEMA)}}
    return {code: {"description": _ERROR_MEANINGS[code], "content": content} for code in codes}


_ERROR_MEANINGS = {
    400: "malformed request (e.g. a multipart body that cannot be parsed)",
    401: "missing or wrong bearer token",
    403: "the bearer token is read-only (TASKS_READ_TOKEN): it may only GET",
    404: "no such task, schedule or file",
    409: "not possible in the task's current status, Idempotency-Key reused, a schedule id "
    "taken, or a change of a schedule defined in code",
    413: "body over the size limit",
    422: "invalid input: `detail` says why, as a sentence or a list of issues",
    431: "request headers over 16 KiB in all",
    503: "the task database cannot be used now; try again after Retry-After seconds",
}


_STATUS_OF_ERROR: dict[type[TaskError], int] = {
    TaskNotFound: 404,
    TaskTypeNotFound: 404,
    ScheduleNotFound: 404,
    UnknownTaskType: 422,
    InvalidRequest: 422,
    InvalidTransition: 409,
    IdempotencyConflict: 409,
    ScheduleExists: 409,
    ScheduleInCode: 409,
    StoreUnavailable: 503,
}


def install_error_handlers(app: FastAPI) -> None:
    """Map every domain error to its HTTP status, in this one place."""

    async def domain_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, InvalidParams):
            for error in exc.errors:
                error["loc"] = ["body", "params", *error["loc"]]
            return JSONResponse({"detail": exc.errors}, status_code=422)
        if isinstance(exc, InvalidBatchItem):
            return JSONResponse({"detail": _batch_item_errors(exc)}, status_code=422)
        if isinstance(exc, InvalidSchedule):
            # Shaped like a validation error, so that clients point at the field at fault.
            loc = ["body"] if exc.field is None else ["body", exc.field]
            error = {"type": "invalid_schedule", "loc": loc, "msg": str(exc), "input": None}
            return JSONResponse({"detail": [error]}, status_code=422)
        status_code = _STATUS_OF_ERROR.get(type(exc), 500)
        headers = {"Retry-After": "1"} if status_code == 503 else None
        return JSONResponse({"detail": str(exc)}, status_code=status_code, headers=headers)

    app.add_exception_handler(TaskError, domain_error)


def _batch_item_errors(exc: InvalidBatchItem) -> list[dict[str, Any]]:
    """The bad item's errors, each placed at its index: ["body", "tasks", 3, ...]."""
    at = ["body", "tasks", exc.index]
    inner = exc.error
    if isinstance(inner, InvalidParams):
        return [{**error, "loc": [*at, "params", *error["loc"]]} for error in inner.errors]
    kind, field = (
        ("unknown_task_type", "name")
        if isinstance(inner, UnknownTaskType)
        else ("invalid_request", None)
    )
    loc = [*at, field] if field else at
    return [{"type": kind, "loc": loc, "msg": str(inner), "input": None}]
