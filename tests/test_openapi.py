"""The OpenAPI document: valid for its version, short operation ids, one error schema, and
a client generated from it (openapi-python-client) that drives a task's whole life."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from openapi_spec_validator import validate

from tasks_service import create_app
from tasks_service.config import Settings
from tasks_service.web.schemas import ErrorOut
from tests.harness import Server, ServerFactory
from tests.helpers import App, AppFactory

pytestmark = pytest.mark.anyio

ADMIN = "openapi-admin"
READER = "openapi-reader"
ERROR_REF = {"$ref": "#/components/schemas/ErrorOut"}


def document(**settings: Any) -> dict[str, Any]:
    app = create_app(Settings(db=":memory:", **settings))
    result: dict[str, Any] = app.openapi()
    return result


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in doc["paths"].items():
        for method, operation in methods.items():
            yield method.upper(), path, operation


@pytest.mark.parametrize("guarded", [False, True])
def test_the_document_is_valid_for_the_version_it_declares(guarded: bool) -> None:
    doc = document(api_token=ADMIN if guarded else None)
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # openapi-spec-validator picks the 3.1 schema from the declared version
    assert "itemSchema" not in json.dumps(doc)  # a 3.2 keyword


def test_every_operation_id_is_its_route_function_name() -> None:
    app = create_app(Settings(db=":memory:"))
    doc = app.openapi()
    routes: list[Any] = []
    for route in app.routes:  # FastAPI keeps an included router whole: look inside it
        included = getattr(route, "original_router", None)
        routes.extend(included.routes if included is not None else [route])
    names = {
        (method, route.path): route.name
        for route in routes
        if isinstance(route, APIRoute) and route.include_in_schema
        for method in route.methods
    }
    assert len(names) == len(list(operations(doc)))
    ids = [operation["operationId"] for _, _, operation in operations(doc)]
    assert len(ids) == len(set(ids)), ids
    for method, path, operation in operations(doc):
        assert operation["operationId"] == names[(method, path)]
    assert {"create_task", "get_task", "list_tasks", "cancel_task", "retry_task"} <= set(ids)
    assert {"list_task_types", "list_schedules", "upload_file", "get_file"} <= set(ids)
    assert "Body_upload_file" in doc["components"]["schemas"]


def test_every_error_answer_refers_to_the_one_error_schema() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    for method, path, operation in operations(doc):
        responses = operation["responses"]
        for code, answer in responses.items():
            if int(code) < 400:
                continue
            assert answer["content"] == {"application/json": {"schema": ERROR_REF}}, (
                method,
                path,
                code,
            )
        assert {"431", "503"} <= set(responses), (method, path)
        if path != "/health":
            assert "401" in responses, (method, path)
            assert ("403" in responses) is (method != "GET"), (method, path)
    detail = schemas["ErrorOut"]["properties"]["detail"]
    assert detail["anyOf"] == [
        {"type": "string"},
        {"type": "array", "items": {"$ref": "#/components/schemas/ValidationIssue"}},
    ]


def test_the_guarded_document_names_its_bearer_scheme() -> None:
    doc = document(api_token=ADMIN)
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["security"] == [{"bearer": []}]
    assert doc["paths"]["/health"]["get"]["security"] == []


async def test_every_422_the_service_sends_has_the_documented_shape(make_app: AppFactory) -> None:
    app: App = await make_app()
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/tasks", {"json": {"name": "sleep", "params": {"seconds": "x"}}}),
        ("POST", "/tasks", {"json": {"name": "no_such_type"}}),
        ("POST", "/tasks", {"json": {"name": "sleep", "bogus": 1}}),
        ("POST", "/tasks", {"content": b"{", "headers": {"content-type": "application/json"}}),
        ("GET", "/tasks?limit=0", {}),
        ("GET", "/tasks?status=nope", {}),
        ("GET", "/tasks?cursor=not-ours", {}),
        ("POST", "/files", {}),
    ]
    shapes = set()
    for method, path, kwargs in cases:
        response = await app.client.request(method, path, **kwargs)
        assert response.status_code == 422, (path, response.text)
        error = ErrorOut.model_validate(response.json())
        shapes.add(type(error.detail))
    assert shapes == {str, list}


# -- a client generated from the document -----------------------------------------------------


@pytest.fixture
def guarded_server(server_factory: ServerFactory, tmp_path: Path) -> Server:
    env = {
        "TASKS_API_TOKEN": ADMIN,
        "TASKS_READ_TOKEN": READER,
        "TASKS_DATA_DIR": str(tmp_path / "data"),
        "TASKS_SHUTDOWN_GRACE": "0.5",
    }
    return server_factory(env=env).start()


def generate_client(server: Server, into: Path) -> str:
    """openapi-python-client on the server's /openapi.json; what it printed."""
    answer = httpx.get(
        f"{server.url}/openapi.json", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
    )
    assert answer.status_code == 200
    spec = into / "openapi.json"
    spec.write_text(answer.text)
    config = into / "config.json"
    config.write_text(json.dumps({"post_hooks": []}))  # no formatter run: not needed to import
    cli = Path(sys.executable).with_name("openapi-python-client")
    command = [str(cli), "generate", "--path", str(spec), "--meta", "none"]
    command += ["--output-path", str(into / "tasks_client"), "--config", str(config)]
    generated = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = generated.stdout + generated.stderr
    assert generated.returncode == 0, output
    return output


@pytest.mark.slow
def test_a_generated_client_drives_a_task_through_its_life(
    guarded_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    output = generate_client(guarded_server, tmp_path)
    assert "warning" not in output.lower(), output
    assert "error" not in output.lower(), output
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.startswith("tasks_client")]:
        monkeypatch.delitem(sys.modules, name)
    client_module = importlib.import_module("tasks_client")
    api = importlib.import_module("tasks_client.api.tasks")
    models = importlib.import_module("tasks_client.models")
    for operation in ("create_task", "get_task", "cancel_task", "list_tasks"):
        importlib.import_module(f"tasks_client.api.tasks.{operation}")

    with (
        client_module.AuthenticatedClient(base_url=guarded_server.url, token=ADMIN) as admin,
        client_module.AuthenticatedClient(base_url=guarded_server.url, token=READER) as reader,
    ):
        drive_a_task(admin, reader, api, models)


def drive_a_task(admin: Any, reader: Any, api: Any, models: Any) -> None:
    """Start, poll, a refused and a real cancel, a 404 and both shapes of 422: all typed."""
    params = models.TaskCreateParams.from_dict({"seconds": 60, "steps": 60})

    # Start: 202, a typed task.
    started = api.create_task.sync_detailed(
        client=admin, body=models.TaskCreate(name="sleep", params=params)
    )
    assert started.status_code == 202
    task = started.parsed
    assert isinstance(task, models.TaskOut) and task.name == "sleep"
    assert task.params.additional_properties == {"seconds": 60.0, "steps": 60}

    # Poll until it runs.
    deadline = time.monotonic() + 15
    while (polled := api.get_task.sync(task.id, client=reader)).status != models.TaskStatus.RUNNING:
        assert time.monotonic() < deadline, polled
        time.sleep(0.05)
    assert isinstance(polled, models.TaskOut)
    page = api.list_tasks.sync(client=reader, status=[models.TaskStatus.RUNNING])
    assert isinstance(page, models.TaskPage) and [t.id for t in page.items] == [task.id]

    # The read token may not cancel: a typed 403.
    refused = api.cancel_task.sync_detailed(task.id, client=reader)
    assert refused.status_code == 403
    assert isinstance(refused.parsed, models.ErrorOut) and "read-only" in refused.parsed.detail

    # Cancel: 202 while it stops, then cancelled.
    cancelled = api.cancel_task.sync_detailed(task.id, client=admin)
    assert cancelled.status_code == 202 and cancelled.parsed.cancel_requested is True
    while (polled := api.get_task.sync(task.id, client=reader)).status != "cancelled":
        assert time.monotonic() < deadline, polled
        time.sleep(0.05)
    again = api.cancel_task.sync_detailed(task.id, client=admin)
    assert again.status_code == 409 and "cancelled" in again.parsed.detail

    # A 404 and the two shapes of a 422, each typed as the one error model.
    missing = api.get_task.sync_detailed("CR6EQWQVSKMMZCPWMPCX2D8YG8", client=reader)
    assert missing.status_code == 404 and isinstance(missing.parsed, models.ErrorOut)
    assert "CR6EQWQVSKMMZCPWMPCX2D8YG8" in missing.parsed.detail
    unknown = api.create_task.sync_detailed(client=admin, body=models.TaskCreate(name="nope"))
    assert unknown.status_code == 422 and isinstance(unknown.parsed, models.ErrorOut)
    assert "known types" in unknown.parsed.detail
    bad = models.TaskCreateParams.from_dict({"seconds": "soon"})
    invalid = api.create_task.sync_detailed(
        client=admin, body=models.TaskCreate(name="sleep", params=bad)
    )
    assert invalid.status_code == 422 and isinstance(invalid.parsed, models.ErrorOut)
    (issue,) = invalid.parsed.detail
    assert isinstance(issue, models.ValidationIssue)
    assert issue.loc == ["body", "params", "seconds"] and issue.type_ == "float_parsing"
    assert issue.input_ == "soon"
