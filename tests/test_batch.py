"""POST /tasks/batch and service.enqueue_many: all or nothing, per-item idempotency keys shared
with the Idempotency-Key header, the bad item's index in the 422 (both stores)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.helpers import BOTH_STORES, App, AppFactory

pytestmark = [pytest.mark.anyio, BOTH_STORES]


async def stored_count(app: App) -> int:
    page = await app.client.get("/tasks", params={"limit": 500})
    return len(page.json()["items"])


async def batch(app: App, *items: dict[str, Any]) -> Any:
    return await app.client.post("/tasks/batch", json={"tasks": list(items)})


async def test_a_batch_is_stored_and_run_in_order(app: App) -> None:
    response = await batch(
        app,
        {"name": "echo", "params": {"text": "a"}},
        {"name": "echo", "params": {"text": "b"}, "priority": 3},
        {"name": "noop", "delay": 0},
    )
    assert response.status_code == 202, response.text
    items = response.json()["items"]
    assert [t["name"] for t in items] == ["echo", "echo", "noop"]
    assert items[1]["priority"] == 3
    assert set(items[0]) == set(await app.task(items[0]["id"]))  # task JSON, every field
    done = [await app.wait_for(t["id"]) for t in items]
    assert [t["result"] for t in done[:2]] == [
        {"text": "a", "extra": None},
        {"text": "b", "extra": None},
    ]


@pytest.mark.parametrize(
    ("items", "loc"),
    [
        (
            [{"name": "noop"}, {"name": "noop"}, {"name": "no_such_type"}],
            ["body", "tasks", 2, "name"],
        ),
        (
            [{"name": "noop"}, {"name": "bounded", "params": {"count": 99}}],
            ["body", "tasks", 1, "params", "count"],
        ),
        ([{"name": "noop"}, {"name": "noop", "delay": -1}], ["body", "tasks", 1, "delay"]),
        ([{"name": "noop"}, {"nom": "noop"}], ["body", "tasks", 1, "nom"]),
        ([{"name": "echo", "params": {"text": 5}}], ["body", "tasks", 0, "params", "text"]),
    ],
)
async def test_one_bad_item_is_a_422_naming_its_index_and_nothing_is_stored(
    app: App, items: list[dict[str, Any]], loc: list[Any]
) -> None:
    response = await batch(app, *items)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert any(error["loc"] == loc for error in detail), detail
    assert await stored_count(app) == 0


@pytest.mark.parametrize(
    "body",
    [{}, {"tasks": []}, {"tasks": [{"name": "noop"}] * 1001}, {"tasks": "noop"}, [], {"x": 1}],
)
async def test_a_malformed_batch_is_a_422(app: App, body: Any) -> None:
    response = await app.client.post("/tasks/batch", json=body)
    assert response.status_code == 422, response.text
    assert await stored_count(app) == 0


async def test_a_batch_over_the_body_limit_is_413(make_app: AppFactory) -> None:
    app = await make_app(max_body=2000)
    response = await batch(app, *[{"name": "echo", "params": {"text": "x" * 100}}] * 30)
    assert response.status_code == 413
    assert await stored_count(app) == 0


async def test_item_keys_are_the_idempotency_keys_of_post_tasks(app: App) -> None:
    body = {"name": "echo", "params": {"text": "once"}}
    first = await batch(app, {**body, "idempotency_key": "k1"}, {"name": "noop"})
    assert first.status_code == 202
    again = await batch(app, {**body, "idempotency_key": "k1"})
    assert again.status_code == 202
    assert again.json()["items"][0]["id"] == first.json()["items"][0]["id"]
    single = await app.client.post("/tasks", json=body, headers={"Idempotency-Key": "k1"})
    assert single.status_code == 200
    assert single.json()["id"] == first.json()["items"][0]["id"]
    assert await stored_count(app) == 2


async def test_a_key_reused_with_another_body_makes_the_whole_batch_409(app: App) -> None:
    await app.client.post("/tasks", json={"name": "noop"}, headers={"Idempotency-Key": "k2"})
    before = await stored_count(app)
    response = await batch(
        app,
        {"name": "echo", "params": {"text": "new"}},
        {"name": "echo", "params": {"text": "other"}, "idempotency_key": "k2"},
    )
    assert response.status_code == 409, response.text
    assert "Idempotency-Key was already used" in response.json()["detail"]
    assert await stored_count(app) == before  # not even the first item


async def test_one_key_twice_in_a_batch(app: App) -> None:
    same = {"name": "echo", "params": {"text": "x"}, "idempotency_key": "twice"}
    response = await batch(app, same, same)
    assert response.status_code == 202
    ids = [t["id"] for t in response.json()["items"]]
    assert ids[0] == ids[1]
    other = {**same, "params": {"text": "y"}, "idempotency_key": "again"}
    clash = await batch(app, {**same, "idempotency_key": "again"}, other)
    assert clash.status_code == 422
    assert "same idempotency_key" in str(clash.json()["detail"])


async def test_concurrent_batches_with_the_same_keys_store_one_set(app: App) -> None:
    items = [{"name": "noop", "idempotency_key": f"race-{i}"} for i in range(20)]
    answers = await asyncio.gather(*(batch(app, *items) for _ in range(5)))
    assert {a.status_code for a in answers} == {202}
    id_sets = {tuple(t["id"] for t in a.json()["items"]) for a in answers}
    assert len(id_sets) == 1
    assert await stored_count(app) == 20


async def test_the_python_api_enqueues_many(app: App) -> None:
    tasks = await app.service.enqueue_many(
        [{"name": "echo", "params": {"text": str(i)}} for i in range(50)]
    )
    assert len(tasks) == 50
    done = [await app.wait_for(t.id) for t in tasks]
    assert [t["result"]["text"] for t in done] == [str(i) for i in range(50)]
    metrics = (await app.client.get("/metrics")).text
    assert 'tasks_finished_total{name="echo",status="completed"} 50.0' in metrics
