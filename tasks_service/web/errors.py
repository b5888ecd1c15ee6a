"""Domain errors mapped to HTTP in one place, and the error answers each route documents."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tasks_service.models import (
    IdempotencyConflict,
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
    UnknownTaskType,
)
from tasks_service.web.schemas import ErrorOut


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Error answers: JSON `{"detail": ...}`, whatever the route's own content type."""
    content = {"application/json": {"schema": ErrorOut.model_json_schema()}}
    return {code: {"description": _ERROR_MEANINGS[code], "content": content} for code in codes}


_ERROR_MEANINGS = {
    400: "malformed request (e.g. a multipart body that cannot be parsed)",
    401: "missing or wrong bearer token",
    404: "no such task, schedule or file",
    409: "not possible in the task's current status, Idempotency-Key reused, a schedule id "
    "taken, or a change of a schedule defined in code",
    413: "body over the size limit",
    422: "invalid input",
}


_STATUS_OF_ERROR: dict[type[TaskError], int] = {
    TaskNotFound: 404,
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
        if isinstance(exc, InvalidSchedule):
            # Shaped like a validation error, so that clients point at the field at fault.
            loc = ["body"] if exc.field is None else ["body", exc.field]
            error = {"type": "invalid_schedule", "loc": loc, "msg": str(exc), "input": None}
            return JSONResponse({"detail": [error]}, status_code=422)
        status_code = _STATUS_OF_ERROR.get(type(exc), 500)
        headers = {"Retry-After": "1"} if status_code == 503 else None
        return JSONResponse({"detail": str(exc)}, status_code=status_code, headers=headers)

    app.add_exception_handler(TaskError, domain_error)
