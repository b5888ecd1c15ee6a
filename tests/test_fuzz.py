"""The API fuzzed from its own OpenAPI document (schemathesis), against a real server.

No answer may be a 5xx, and every answer (status code, content type, headers, body) must be
one the document describes. Bounded and derandomized, so CI runs the same cases each time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.harness import TEST_ENV, Server

pytestmark = pytest.mark.slow

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
# Task types that reach outside this machine: never started by the fuzzer.
REACHES_OUT = {"http_request", "send_email"}


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("fuzz")
    env = {
        **TEST_ENV,
        "TASKS_MODULES": "",
        "TASKS_DATA_DIR": str(tmp / "data"),
        "TASKS_SHUTDOWN_GRACE": "1",
    }
    server = Server(db=tmp / "tasks.db", log_path=tmp / "server.log", env=env).start()
    yield server
    server.stop()
    log = (tmp / "server.log").read_text()
    assert "Exception in ASGI application" not in log, log[-3000:]


@pytest.fixture(scope="module")
def api_schema(fuzzed_server: Server) -> Any:
    return schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")


def operations() -> list[str]:
    """Every documented operation, as "METHOD path" (read from the app, not a server)."""
    from main import create_app

    document = create_app().openapi()
    return [
        f"{method.upper()} {path}"
        for path, methods in document["paths"].items()
        for method in methods
    ]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("operation", operations())
def test_no_server_errors_and_every_answer_is_documented(
    api_schema: Any, operation: str, mode: GenerationMode
) -> None:
    """Valid input (positive) and input the schema forbids (negative), for every operation."""
    method, path = operation.split(" ", 1)
    api_operation = api_schema[path][method]

    @given(case=api_operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        if (
            isinstance(case.body, dict)
            and {
                str(case.body.get("name")),
                str(case.body.get("task")),  # a schedule's
            }
            & REACHES_OUT
        ):
            return
        case.call_and_validate(checks=CHECKS)

    try:
        check()
    except Unsatisfiable:
        # Negative mode on an operation with nothing to get wrong (no body, no constrained
        # parameter): there is no invalid request to send, which is a pass.
        assert mode is GenerationMode.NEGATIVE
