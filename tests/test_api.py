"""Every row of SPEC.md's HTTP table: the success path and each listed error."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.harness import eventually
from tests.helpers import BOTH_STORES, App, AppFactory

pytestmark = [pytest.mark.anyio, BOTH_STORES]


async def count_tasks(app: App) -> int:
    response = await app.client.get("/tasks", params={"limit": 500})
    return len(response.json()["items"])


# -- POST /tasks -----------------------------------------------------------------------------


async def test_post_accepts_and_runs_a_task(app: App) -> None:
    response = await app.client.post("/tasks", json={"name": "echo", "params": {"text": "hi"}})
    assert response.status_code == 202
    task = response.json()
    assert response.headers["location"] == f"/tasks/{task['id']}"
    assert task["name"] == "echo"
    assert task["params"] == {"text": "hi", "extra": None}  # defaults filled in
    assert task["status"] in ("pending", "running")
    assert task["cancel_requested"] is False
    assert task["schedule_id"] is None
    assert task["created_at"].endswith("Z")
    done = await app.wait_for(task["id"])
    assert done["status"] == "completed"
    assert done["result"] == {"text": "hi", "extra": None}
    assert done["finished_at"] >= done["started_at"] >= done["created_at"]
    assert done["attempts"] == 1


async def test_task_json_has_exactly_the_spec_fields(app: App) -> None:
    task = await app.post_task("noop")
    assert set(task) == {
        "id", "name", "params", "status", "progress", "message", "result", "error",
        "attempts", "max_attempts", "priority", "created_at", "run_at", "started_at",
        "finished_at", "cancel_requested", "schedule_id", "parent_id", "waiting_for",
    }  # fmt: skip


async def test_unicode_and_quotes_round_trip(app: App) -> None:
    text = "naïve ☃ \"quoted\" 'single' \\ back; DROP TABLE tasks; -- 你好 \U0001f600"
    extra = {"key with 'quotes'": ['"', "\u0000", "\n"]}
    task = await app.post_task("echo", params={"text": text, "extra": extra})
    done = await app.wait_for(task["id"])
    assert done["params"]["text"] == text
    assert done["result"] == {"text": text, "extra": extra}


async def test_unknown_name_is_422_listing_known_names(app: App) -> None:
    response = await app.client.post("/tasks", json={"name": "rm_rf"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "rm_rf" in detail and "sleep" in detail and "echo" in detail
    assert await count_tasks(app) == 0


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"name": "sleep", "params": {"seconds": "soon"}}, ["body", "params", "seconds"]),
        ({"name": "sleep", "params": {}}, ["body", "params", "seconds"]),
        ({"name": "sleep", "params": {"seconds": 1, "color": "red"}}, ["body", "params", "color"]),
        ({"name": "sleep", "params": {"seconds": -1}}, ["body", "params", "seconds"]),
        ({"name": "sleep", "params": {"seconds": 1e9}}, ["body", "params", "seconds"]),
        ({"name": "bounded", "params": {"count": 11}}, ["body", "params", "count"]),
        ({"name": "sleep", "params": [1, 2]}, ["body", "params"]),
        ({"name": 42}, ["body", "name"]),
        ({"params": {}}, ["body", "name"]),
        ({"name": "noop", "delay": -1}, ["body", "delay"]),
        ({"name": "noop", "priority": "high"}, ["body", "priority"]),
        ({"name": "noop", "max_attempts": 0}, ["body", "max_attempts"]),
        ({"name": "noop", "timeout": 0}, ["body", "timeout"]),
        ({"name": "noop", "surprise": True}, ["body", "surprise"]),
        ({"name": "noop", "run_at": "2030-01-01T00:00:00"}, ["body", "run_at"]),
        ({"name": "noop", "run_at": "tomorrow"}, ["body", "run_at"]),
        ({"name": "noop", "delay": 5, "run_at": "2030-01-01T00:00:00Z"}, ["body"]),
    ],
)
async def test_invalid_bodies_are_422_and_store_nothing(
    app: App, body: dict[str, Any], where: list[str]
) -> None:
    response = await app.client.post("/tasks", json=body)
    assert response.status_code == 422, response.text
    locations = [error["loc"] for error in response.json()["detail"]]
    assert any(loc[: len(where)] == where for loc in locations), locations
    assert await count_tasks(app) == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{",
        b'{"name": "noop",}',
        b"not json at all",
        b'{"name": "noop", "params": {"x": NaN}}',
        b"\xff\xfe\x00garbage",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"name": "echo", "params": {"text": "x", "extra": '
        + b'{"a":' * 50_000 + b"1" + b"}" * 50_001 + b"}",
        b"[]",
        b'"just a string"',
    ],
    ids=[
        "empty", "open-brace", "trailing-comma", "text", "nan", "bad-utf8", "deep-array",
        "deep-object", "array", "string",
    ],
)  # fmt: skip
async def test_malformed_json_is_422(app: App, raw: bytes) -> None:
    response = await app.client.post(
        "/tasks", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.json()["detail"]
    assert await count_tasks(app) == 0
    assert (await app.client.get("/health")).status_code == 200


async def test_body_without_content_type_is_still_read_as_json(app: App) -> None:
    # curl -d sends form encoding unless told otherwise; the body is JSON all the same.
    response = await app.client.post(
        "/tasks",
        content=b'{"name": "noop"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 202


async def test_oversize_body_is_413_and_stores_nothing(make_app: AppFactory) -> None:
    app = await make_app(max_body=1000)
    big = {"name": "echo", "params": {"text": "x" * 2000}}
    response = await app.client.post("/tasks", json=big)
    assert response.status_code == 413
    assert "1000" in response.json()["detail"]

    async def chunks():  # no Content-Length: counted while streaming
        for _ in range(10):
            yield b'{"name": "echo", "params": {"text": "' + b"y" * 200

    response = await app.client.post("/tasks", content=chunks())
    assert response.status_code == 413
    assert await count_tasks(app) == 0
    small = await app.client.post("/tasks", json={"name": "echo", "params": {"text": "ok"}})
    assert small.status_code == 202


async def test_headers_over_16_kib_are_431(app: App) -> None:
    response = await app.client.get("/health", headers={"x-big": "a" * 17000})
    assert response.status_code == 431
    many = {f"x-h{i}": "b" * 100 for i in range(200)}
    response = await app.client.post("/tasks", json={"name": "noop"}, headers=many)
    assert response.status_code == 431
    assert await count_tasks(app) == 0


async def test_delay_and_run_at_start_later(app: App) -> None:
    delayed = await app.post_task("noop", delay=60)
    assert delayed["status"] == "pending"
    run_at = datetime.fromisoformat(delayed["run_at"])
    created = datetime.fromisoformat(delayed["created_at"])
    assert timedelta(seconds=59) < run_at - created <= timedelta(seconds=61)

    at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    scheduled = await app.post_task("noop", run_at=at.isoformat())
    assert datetime.fromisoformat(scheduled["run_at"]) == at
    assert scheduled["status"] == "pending"

    other_zone = "2020-01-01T05:00:00+05:00"  # in the past: runs at once
    past = await app.post_task("noop", run_at=other_zone)
    assert datetime.fromisoformat(past["run_at"]) == datetime(2020, 1, 1, tzinfo=UTC)
    assert (await app.wait_for(past["id"]))["status"] == "completed"
    assert (await app.task(delayed["id"]))["status"] == "pending"


async def test_idempotency_key_same_body_returns_the_same_task(app: App) -> None:
    body = {"name": "echo", "params": {"text": "once"}}
    headers = {"Idempotency-Key": "order-17"}
    first = await app.client.post("/tasks", json=body, headers=headers)
    assert first.status_code == 202
    # Same body, other key order and spacing: still the same request.
    again = await app.client.post(
        "/tasks",
        content=b'{"params": {"text": "once"},   "name": "echo"}',
        headers={**headers, "content-type": "application/json"},
    )
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == f"/tasks/{first.json()['id']}"
    assert await count_tasks(app) == 1


async def test_idempotency_key_with_another_body_is_409(app: App) -> None:
    headers = {"Idempotency-Key": "order-18"}
    first = await app.client.post("/tasks", json={"name": "noop"}, headers=headers)
    assert first.status_code == 202
    other = await app.client.post(
        "/tasks", json={"name": "echo", "params": {"text": "x"}}, headers=headers
    )
    assert other.status_code == 409
    assert "Idempotency-Key" in other.json()["detail"]
    assert await count_tasks(app) == 1


async def test_an_idempotency_key_over_255_characters_is_422(app: App) -> None:
    response = await app.client.post(
        "/tasks", json={"name": "noop"}, headers={"Idempotency-Key": "k" * 256}
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]
    assert await count_tasks(app) == 0


async def test_concurrent_requests_with_one_key_make_one_task(app: App) -> None:
    import asyncio

    body = {"name": "noop"}
    responses = await asyncio.gather(
        *(app.client.post("/tasks", json=body, headers={"Idempotency-Key": "k"}) for _ in range(20))
    )
    assert sorted(r.status_code for r in responses) == [200] * 19 + [202]
    assert len({r.json()["id"] for r in responses}) == 1


# -- GET /tasks/{id} -------------------------------------------------------------------------


async def test_get_unknown_task_is_404(app: App) -> None:
    for task_id in ("CR6EQWQVSKMMZCPWMPCX2D8YG8", "nope", "'; DROP TABLE tasks; --"):
        response = await app.client.get(f"/tasks/{task_id}")
        assert response.status_code == 404
        assert "no task" in response.json()["detail"]


# -- GET /tasks ------------------------------------------------------------------------------


async def test_list_is_newest_first_and_pages_with_a_cursor(app: App) -> None:
    ids = [(await app.post_task("noop", delay=3600))["id"] for _ in range(7)]
    first = (await app.client.get("/tasks", params={"limit": 3})).json()
    assert [t["id"] for t in first["items"]] == ids[::-1][:3]
    second = await app.client.get("/tasks", params={"limit": 3, "cursor": first["next_cursor"]})
    second_page = second.json()
    assert [t["id"] for t in second_page["items"]] == ids[::-1][3:6]
    last = await app.client.get("/tasks", params={"limit": 3, "cursor": second_page["next_cursor"]})
    assert [t["id"] for t in last.json()["items"]] == ids[:1]
    assert last.json()["next_cursor"] is None
    default = (await app.client.get("/tasks")).json()
    assert len(default["items"]) == 7 and default["next_cursor"] is None


async def test_list_filters_by_status_repeatable_and_name(app: App) -> None:
    pending = await app.post_task("noop", delay=3600)
    done = await app.post_task("echo", params={"text": "a"})
    await app.wait_for(done["id"])
    failed = await app.post_task("boom")
    await app.wait_for(failed["id"])

    async def ids(**params: Any) -> set[str]:
        response = await app.client.get("/tasks", params=params)
        assert response.status_code == 200
        return {t["id"] for t in response.json()["items"]}

    assert await ids(status="pending") == {pending["id"]}
    assert await ids(status=["pending", "failed"]) == {pending["id"], failed["id"]}
    assert await ids(name="echo") == {done["id"]}
    assert await ids(name="echo", status="failed") == set()
    assert await ids(name="nothing-by-this-name") == set()


@pytest.mark.parametrize(
    "params",
    [
        {"status": "sleeping"},
        {"limit": 0},
        {"limit": 501},
        {"limit": "many"},
        {"cursor": "not-a-cursor"},
        {"cursor": "'; DROP TABLE tasks; --"},
    ],
)
async def test_list_rejects_bad_queries(app: App, params: dict[str, Any]) -> None:
    response = await app.client.get("/tasks", params=params)
    assert response.status_code == 422
    assert response.json()["detail"]


async def test_list_accepts_the_limit_bounds(app: App) -> None:
    for limit in (1, 500):
        assert (await app.client.get("/tasks", params={"limit": limit})).status_code == 200


# -- cancel ----------------------------------------------------------------------------------


async def test_cancel_pending_is_200_and_it_never_starts(app: App) -> None:
    task = await app.post_task("noop", delay=0.5)
    response = await app.client.post(f"/tasks/{task['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["cancel_requested"] is True
    await app.post_task("noop")  # the runner has work; the cancelled one must stay put
    import asyncio

    await asyncio.sleep(1.0)
    after = await app.task(task["id"])
    assert after["status"] == "cancelled"
    assert after["attempts"] == 0 and after["started_at"] is None


async def test_cancel_running_async_is_202_then_cancelled(app: App) -> None:
    task = await app.post_task("hang")
    await app.wait_for(task["id"], "running")
    response = await app.client.post(f"/tasks/{task['id']}/cancel")
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True
    done = await app.wait_for(task["id"], timeout=1.0)
    assert done["status"] == "cancelled"
    assert done["result"] is None and done["error"] is None


async def test_cancel_terminal_is_409_naming_its_status(app: App) -> None:
    task = await app.post_task("noop")
    await app.wait_for(task["id"])
    response = await app.client.post(f"/tasks/{task['id']}/cancel")
    assert response.status_code == 409
    assert "completed" in response.json()["detail"]
    again = await app.client.post(f"/tasks/{task['id']}/cancel")
    assert again.status_code == 409


async def test_cancel_unknown_is_404(app: App) -> None:
    assert (await app.client.post("/tasks/CR6EQWQVSKMMZCPWMPCX2D8YG8/cancel")).status_code == 404
    assert (await app.client.post("/tasks/x/cancel")).status_code == 404


# -- retry -----------------------------------------------------------------------------------


async def test_retry_failed_makes_a_new_task(app: App) -> None:
    task = await app.post_task("boom", params={"message": "first"}, priority=3)
    await app.wait_for(task["id"])
    response = await app.client.post(f"/tasks/{task['id']}/retry")
    assert response.status_code == 202
    again = response.json()
    assert again["id"] != task["id"]
    assert again["name"] == "boom" and again["params"] == {"message": "first"}
    assert again["priority"] == 3
    assert response.headers["location"] == f"/tasks/{again['id']}"
    assert (await app.wait_for(again["id"]))["status"] == "failed"


async def test_retry_cancelled_works_and_others_are_409(app: App) -> None:
    pending = await app.post_task("noop", delay=3600)
    assert (await app.client.post(f"/tasks/{pending['id']}/retry")).status_code == 409
    await app.client.post(f"/tasks/{pending['id']}/cancel")
    assert (await app.client.post(f"/tasks/{pending['id']}/retry")).status_code == 202
    done = await app.post_task("noop")
    await app.wait_for(done["id"])
    response = await app.client.post(f"/tasks/{done['id']}/retry")
    assert response.status_code == 409
    assert "completed" in response.json()["detail"]
    assert (await app.client.post("/tasks/CR6EQWQVSKMMZCPWMPCX2D8YG8/retry")).status_code == 404


# -- task types, health, auth ----------------------------------------------------------------


async def test_task_types_describe_params_as_json_schema(app: App) -> None:
    response = await app.client.get("/task-types")
    assert response.status_code == 200
    types = {t["name"]: t for t in response.json()}
    sleep = types["sleep"]
    assert sleep["description"]
    schema = sleep["params_schema"]
    assert schema["required"] == ["seconds"]
    assert schema["properties"]["seconds"]["maximum"] == 86400
    assert schema["properties"]["steps"]["default"] == 10
    assert schema["additionalProperties"] is False
    assert types["flaky"]["max_attempts"] == 3
    assert types["too_slow"]["timeout"] == 0.2
    assert set(sleep) == {
        "name", "description", "params_schema", "max_attempts", "timeout", "schedule", "process",
        "concurrency", "rate_limit", "limit_key", "paused", "running",
    }  # fmt: skip


async def test_health(app: App) -> None:
    response = await app.client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_token_guards_everything_but_health(make_app: AppFactory) -> None:
    app = await make_app(api_token="s3cret")
    assert (await app.client.get("/health")).status_code == 200
    for method, path in [
        ("POST", "/tasks"),
        ("GET", "/tasks"),
        ("GET", "/tasks/CR6EQWQVSKMMZCPWMPCX2D8YG8"),
        ("POST", "/tasks/CR6EQWQVSKMMZCPWMPCX2D8YG8/cancel"),
        ("POST", "/tasks/CR6EQWQVSKMMZCPWMPCX2D8YG8/retry"),
        ("GET", "/task-types"),
        ("GET", "/schedules"),
        ("POST", "/schedules/purge_tasks/pause"),
        ("POST", "/schedules/purge_tasks/run"),
        ("GET", "/openapi.json"),
    ]:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
            response = await app.client.request(
                method, path, headers=headers, json={"name": "noop"}
            )
            assert response.status_code == 401, (method, path, headers)
            assert response.headers["www-authenticate"] == "Bearer"
    assert await count_tasks_with(app, "s3cret") == 0
    good = {"Authorization": "Bearer s3cret"}
    lower = await app.client.get("/task-types", headers={"Authorization": "bearer s3cret"})
    assert lower.status_code == 200
    assert (await app.client.get("/")).status_code == 200  # the page itself is open
    document = await app.client.get("/openapi.json", headers=good)
    assert document.status_code == 200 and "/tasks" in document.json()["paths"]
    response = await app.client.post("/tasks", json={"name": "noop"}, headers=good)
    assert response.status_code == 202
    assert await count_tasks_with(app, "s3cret") == 1


async def count_tasks_with(app: App, token: str) -> int:
    response = await app.client.get("/tasks", headers={"Authorization": f"Bearer {token}"})
    return len(response.json()["items"])


async def test_without_token_setting_no_auth_is_needed(app: App) -> None:
    response = await app.client.post("/tasks", json={"name": "noop"})
    assert response.status_code == 202


async def test_service_stays_healthy_after_a_barrage_of_bad_input(app: App) -> None:
    bad: list[tuple[str, str, Any]] = [
        ("POST", "/tasks", b"{"),
        ("POST", "/tasks", json.dumps({"name": "sleep", "params": {"seconds": []}}).encode()),
        ("GET", "/tasks?limit=-5", None),
        ("GET", "/tasks/%00", None),
        ("POST", "/tasks/%2e%2e/cancel", None),
        ("DELETE", "/tasks", None),
    ]
    for method, path, content in bad * 20:
        response = await app.client.request(method, path, content=content)
        assert 400 <= response.status_code < 500, (method, path, response.status_code)
    assert await count_tasks(app) == 0
    assert (await app.client.get("/health")).status_code == 200
    task = await app.post_task("noop")
    await eventually(lambda: _is_done(app, task["id"]))


async def _is_done(app: App, task_id: str) -> bool:
    return (await app.task(task_id))["status"] == "completed"


async def test_openapi_documents_every_route(app: App) -> None:
    document = (await app.client.get("/openapi.json")).json()
    paths = document["paths"]
    for path in ("/tasks", "/tasks/{task_id}", "/tasks/{task_id}/cancel", "/schedules"):
        assert path in paths
    create = paths["/tasks"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/TaskCreate"}
    assert document["components"]["schemas"]["TaskCreate"]["required"] == ["name"]
    assert {"202", "200", "409", "413", "422"} <= set(create["responses"])
    assert (await app.client.get("/docs")).status_code == 200


@pytest.mark.parametrize(("depth", "status"), [(60, 202), (70, 422), (800, 422)])
async def test_nesting_is_capped_at_64_levels(app: App, depth: int, status: int) -> None:
    extra = "1"
    for _ in range(depth - 3):  # the body and params objects make the first levels
        extra = '{"a":' + extra + "}"
    body = '{"name":"echo","params":{"text":"x","extra":' + extra + "}}"
    response = await app.client.post(
        "/tasks", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, response.text
