"""Reading request bodies ourselves: JSON with a depth limit, and answers built directly."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from tasks_service.models import Task


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
        # Fewer brackets than the limit cannot nest deeper than it: no need to walk.
        few = body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH
        if not few and _deeper_than(value, MAX_JSON_DEPTH):
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
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def validation_error(exc: ValidationError, *prefix: str | int) -> RequestValidationError:
    errors = json.loads(exc.json(include_url=False, include_context=False))
    for error in errors:
        error["loc"] = ["body", *prefix, *error["loc"]]
    return RequestValidationError(errors)
