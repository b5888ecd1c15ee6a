"""Security headers on every kind of answer, and request values that must not reach a log
line, a path or the page as anything but inert text."""

from __future__ import annotations

import logging
import sys

import httpx
import pytest

from tasks_service.logs import _Formatter, one_line
from tests.helpers import App, AppFactory

pytestmark = pytest.mark.anyio

API_CSP = "default-src 'none'; frame-ancestors 'none'"


def assert_hardened(response: httpx.Response, *, cache: str | None = "no-store") -> None:
    where = f"{response.request.method} {response.request.url.path} {response.status_code}"
    headers = response.headers
    assert headers.get_list("x-content-type-options") == ["nosniff"], where
    assert headers["x-frame-options"] == "DENY", where
    assert headers["referrer-policy"] == "no-referrer", where
    if cache is not None:
        assert headers["cache-control"] == cache, where


async def test_every_kind_of_answer_carries_the_security_headers(make_app: AppFactory) -> None:
    app: App = await make_app(max_body=100)
    client = app.client
    task = await app.post_task("echo", params={"text": "hi"})
    await app.wait_for(task["id"])
    answers = [
        await client.get(f"/tasks/{task['id']}"),
        await client.get("/tasks"),
        await client.get("/tasks/CR6EQWQVSKMMZCPWMPCX2D8YG8"),  # 404
        await client.get("/tasks?limit=0"),  # 422
        await client.post("/tasks", json={"name": "echo", "params": {"text": "x" * 200}}),  # 413
        await client.get("/tasks", headers={"x-big": "x" * 20_000}),  # 431
        await client.delete("/tasks"),  # 405
        await client.get("/no/such/route"),
        await client.get("/metrics"),
        await client.get("/health"),
        await client.get("/openapi.json"),
        await client.get(f"/tasks/{task['id']}/events"),  # an event stream, ended
    ]
    assert [a.status_code for a in answers] == [
        200, 200, 404, 422, 413, 431, 405, 404, 200, 200, 200, 200,
    ]  # fmt: skip
    for answer in answers:
        is_stream = answer.headers["content-type"].startswith("text/event-stream")
        assert_hardened(answer, cache="no-cache" if is_stream else "no-store")
        assert answer.headers["content-security-policy"] == API_CSP

    page = await client.get("/")  # the dashboard keeps its own strict policy and no-cache
    assert_hardened(page, cache="no-cache")
    assert page.headers["content-security-policy"].startswith("default-src 'self'; script-src")
    asset = await client.get("/static/app.js")  # cacheable, validated by its ETag
    assert_hardened(asset, cache=None)
    assert "cache-control" not in asset.headers and "etag" in asset.headers
    docs = await client.get("/docs")  # HTML with scripts from a CDN: only not framed
    assert_hardened(docs)
    assert docs.headers["content-security-policy"] == "frame-ancestors 'none'"


async def test_refusals_of_the_token_carry_them_too(make_app: AppFactory) -> None:
    app: App = await make_app(api_token="admin", read_token="reader")
    refused = await app.client.get("/tasks")
    assert refused.status_code == 401
    assert_hardened(refused)
    read_only = await app.client.post("/tasks", headers={"Authorization": "Bearer reader"})
    assert read_only.status_code == 403
    assert_hardened(read_only)


@pytest.mark.parametrize(
    "path",
    [
        "/static/../main.py",
        "/static/%2e%2e/%2e%2e/main.py",
        "/static/..%2f..%2fmain.py",
        "/static//etc/passwd",
        "/files/..%2f..%2fetc%2fpasswd",
        "/files/%2e%2e",
    ],
)
async def test_no_path_in_a_request_leaves_its_directory(app: App, path: str) -> None:
    response = await app.client.get(path)
    assert response.status_code in (404, 405), (path, response.status_code)
    assert "create_app" not in response.text and "root:" not in response.text


async def test_a_task_error_cannot_forge_log_lines(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    message = "bad\nERROR    tasks.runner: forged line\r\x1b[31mred\u2028end"
    with caplog.at_level(logging.WARNING, logger="tasks"):
        task = await app.post_task("boom", params={"message": message})
        done = await app.wait_for(task["id"])
    assert done["error"] == f"ValueError: {message}"  # stored and answered as it was
    (record,) = [r for r in caplog.records if task["id"] in r.getMessage()]
    line = record.getMessage()
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert "bad\\nERROR    tasks.runner: forged line\\r\\x1b[31mred\\u2028end" in line


def test_one_line_escapes_breaks_and_controls_and_keeps_the_rest() -> None:
    assert one_line("a\nb\r\nc\x00d\x7fe\x85f\u2029g") == "a\\nb\\r\\nc\\x00d\\x7fe\\x85f\\u2029g"
    assert one_line("tab\tand ünïcödé, quotes ' \" \\") == "tab\tand ünïcödé, quotes ' \" \\"


def test_a_traceback_in_our_format_is_indented_under_its_record() -> None:
    try:
        raise ValueError("x\nERROR    tasks: forged")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("tasks", logging.ERROR, __file__, 1, "failed", None, exc_info)
    text = _Formatter("%(levelname)-9s %(name)s: %(message)s").format(record)
    first, *rest = text.split("\n")
    assert first == "ERROR     tasks: failed"
    assert rest and all(line.startswith("    ") for line in rest)
