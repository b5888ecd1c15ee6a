"""The OpenAPI document, made fit for client generators and validators.

FastAPI writes most of it; what is changed here holds for every route, so routes added
later need nothing special:

- each operation's id is its route function's name (`create_task`, `get_task`...), not
  FastAPI's path-derived default (`create_task_tasks_post`);
- every error answer refers to one schema, `ErrorOut`, by `$ref`: FastAPI's own 422 schema
  (`HTTPValidationError`) is replaced by it, as the service's 422s carry a `detail` that is
  either a sentence or a list of `ValidationIssue`s;
- the answers every guarded operation may give are documented on each one: 401 (token),
  403 (read-only token, on what does not only read), 431 (headers too large) and 503 (the
  database cannot be used now);
- event streams are described in OpenAPI 3.1 terms: FastAPI writes `itemSchema`, a 3.2
  keyword, under the 3.1.0 it declares.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from tasks_service.web.auth import READ_METHODS, is_open
from tasks_service.web.errors import ERROR_SCHEMA, errors
from tasks_service.web.schemas import referenced_models

_FASTAPI_422 = "#/components/schemas/HTTPValidationError"
_FASTAPI_422_PARTS = ("HTTPValidationError", "ValidationError")
_EVENT_STREAM = {
    "type": "string",
    "description": (
        "Server-Sent Events: `event: task` with one line `data: <task JSON>` per change, "
        "and `:` comments as keep-alives"
    ),
}


def operation_id(route: APIRoute) -> str:
    """A route's operationId: its function's name, short and unique in this app."""
    return route.name


def install_openapi(app: FastAPI, *, guarded: bool) -> None:
    """Serve the document below as `app.openapi()` (built on first use, then kept)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = finish(FastAPI.openapi(app), guarded=guarded)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def finish(document: dict[str, Any], *, guarded: bool) -> dict[str, Any]:
    """FastAPI's document with the changes above (in place; returned for convenience)."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in referenced_models():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            _use_the_shared_422(responses)
            _document_common_errors(responses, path, method.upper())
            if guarded and is_open(path):
                operation["security"] = []
            for response in responses.values():
                _describe_event_streams(response.get("content", {}))
    for name in _FASTAPI_422_PARTS:
        schemas.pop(name, None)
    if guarded:
        document["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "TASKS_API_TOKEN"}
        }
        document["security"] = [{"bearer": []}]
    return document


def _use_the_shared_422(responses: dict[str, Any]) -> None:
    answer = responses.get("422")
    if answer is None:
        return
    for media in answer.get("content", {}).values():
        if media.get("schema", {}).get("$ref") == _FASTAPI_422:
            media["schema"] = dict(ERROR_SCHEMA)
            answer["description"] = errors(422)[422]["description"]


def _document_common_errors(responses: dict[str, Any], path: str, method: str) -> None:
    codes = [431, 503]
    if not is_open(path):
        codes.append(401)
        if method not in READ_METHODS:
            codes.append(403)
    for code, answer in errors(*codes).items():
        responses.setdefault(str(code), answer)
    _sort(responses)


def _sort(responses: dict[str, Any]) -> None:
    """Success answers first, then errors by code: the order readers expect."""
    ordered = sorted(responses.items(), key=lambda item: (item[0] >= "400", item[0]))
    responses.clear()
    responses.update(ordered)


def _describe_event_streams(content: dict[str, Any]) -> None:
    stream = content.get("text/event-stream")
    if stream is not None and "itemSchema" in stream:
        del stream["itemSchema"]
        stream["schema"] = dict(_EVENT_STREAM)
