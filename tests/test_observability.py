"""Event streams and Prometheus metrics, checked against what the store says."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import ServerFactory, eventually, post
from tests.helpers import BOTH_STORES, App, AppFactory

pytestmark = BOTH_STORES


def stream(url: str, *, timeout: float = 30) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """(event name, data) of each event of an SSE stream, until the server closes it."""
    with httpx.stream("GET", url, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        event, data, last_id = "message", None, -1
        for line in response.iter_lines():
            if line.startswith("id:"):
                event_id = int(line.split(":", 1)[1])
                assert event_id >= last_id  # change sequence numbers only grow
                last_id = event_id
            elif line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = json.loads(line.split(":", 1)[1])
            elif line == "" and data is not None:
                yield event, data
                event, data = "message", None


def check_in_order(snapshots: list[dict[str, Any]]) -> None:
    rank = {"pending": 0, "running": 1, "completed": 2, "failed": 2, "cancelled": 2}
    statuses = [s["status"] for s in snapshots]
    assert [rank[s] for s in statuses] == sorted(rank[s] for s in statuses), statuses
    progress = [s["progress"] or 0 for s in snapshots if s["status"] == "running"]
    assert progress == sorted(progress)
    assert len({json.dumps(s, sort_keys=True) for s in snapshots}) == len(snapshots)  # no repeats


@pytest.mark.slow
def test_a_task_stream_delivers_every_change_in_order_then_ends(
    server_factory: ServerFactory,
) -> None:
    server = server_factory().start()
    task = post(server, "sleep", params={"seconds": 1, "steps": 4})
    snapshots = [data for _, data in stream(f"{server.url}/tasks/{task['id']}/events")]
    assert snapshots, "nothing arrived"
    check_in_order(snapshots)
    assert snapshots[-1]["status"] == "completed"
    assert snapshots[-1]["result"] == {"slept": 1.0}
    seen = [s["progress"] for s in snapshots if s["status"] == "running"]
    assert {25.0, 50.0, 75.0, 100.0} <= set(seen)  # every step, not a sample


@pytest.mark.slow
def test_a_stream_served_by_another_process_sees_every_change(
    server_factory: ServerFactory,
) -> None:
    runner = server_factory().start()
    watcher = server_factory().start()  # a second service on the same file: another process
    task = post(runner, "sleep", params={"seconds": 1.2, "steps": 6})
    assert task["status"] == "running"  # started at once by the first process
    snapshots = [data for _, data in stream(f"{watcher.url}/tasks/{task['id']}/events")]
    check_in_order(snapshots)
    assert snapshots[-1]["status"] == "completed"
    assert {"running", "completed"} <= {s["status"] for s in snapshots}
    assert len([s for s in snapshots if s["status"] == "running"]) >= 5


@pytest.mark.slow
def test_a_cancelled_pending_task_stream_ends_at_cancelled(server_factory: ServerFactory) -> None:
    server = server_factory().start()
    task = post(server, "noop", delay=3600)
    events: list[dict[str, Any]] = []

    def read() -> None:
        events.extend(data for _, data in stream(f"{server.url}/tasks/{task['id']}/events"))

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.5)
    assert httpx.post(f"{server.url}/tasks/{task['id']}/cancel").status_code == 200
    reader.join(10)
    assert not reader.is_alive()
    assert [e["status"] for e in events] == ["pending", "cancelled"]


@pytest.mark.slow
def test_a_finished_task_stream_sends_its_state_and_ends(server_factory: ServerFactory) -> None:
    server = server_factory().start()
    task = post(server, "boom")
    while httpx.get(f"{server.url}/tasks/{task['id']}").json()["status"] != "failed":
        time.sleep(0.05)
    events = list(stream(f"{server.url}/tasks/{task['id']}/events"))
    assert [(name, data["status"]) for name, data in events] == [("task", "failed")]
    missing = httpx.get(f"{server.url}/tasks/CR6EQWQVSKMMZCPWMPCX2D8YG8/events")
    assert missing.status_code == 404


@pytest.mark.slow
def test_the_all_tasks_stream_shows_new_and_changing_tasks(server_factory: ServerFactory) -> None:
    server = server_factory().start()
    seen: dict[str, list[str]] = {}
    started = threading.Event()

    def read() -> None:
        with httpx.stream("GET", f"{server.url}/events", timeout=30) as response:
            for line in response.iter_lines():
                started.set()
                if line.startswith("data:"):
                    task = json.loads(line[5:])
                    seen.setdefault(task["id"], []).append(task["status"])
                    if len(seen) == 3 and all(s[-1] == "completed" for s in seen.values()):
                        return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(10)
    ids = {post(server, "echo", params={"text": str(i)})["id"] for i in range(3)}
    reader.join(15)
    assert set(seen) == ids
    assert all(statuses[-1] == "completed" for statuses in seen.values())


@pytest.mark.slow
def test_open_streams_do_not_hold_up_a_graceful_shutdown(server_factory: ServerFactory) -> None:
    # A short grace: the hanging task is handed back after a second, so any wait past that
    # would be the streams'.
    server = server_factory(env={"TASKS_SHUTDOWN_GRACE": "1"}).start()
    task = post(server, "hang")
    ended = threading.Event()

    def read() -> None:
        for _ in stream(f"{server.url}/tasks/{task['id']}/events", timeout=60):
            pass
        ended.set()

    for path in ("/events", f"/tasks/{task['id']}/events"):
        threading.Thread(
            target=lambda p=path: list(stream(server.url + p, timeout=60)), daemon=True
        ).start()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.5)
    server.signal(signal.SIGTERM)
    assert server.wait(timeout=30) in (0, -signal.SIGTERM)
    assert ended.wait(5)
    assert "Application shutdown complete" in server.log_path.read_text()


# -- metrics ---------------------------------------------------------------------------------


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.mark.anyio
async def test_metrics_match_the_store_after_a_known_workload(
    make_app: AppFactory, tmp_path: Any
) -> None:
    app = await make_app(concurrency=1)
    for _ in range(3):
        await app.wait_for((await app.post_task("noop"))["id"])
    await app.wait_for((await app.post_task("boom"))["id"])
    flaky = await app.post_task("flaky", params={"path": str(tmp_path / "n"), "failures": 1})
    await app.wait_for(flaky["id"], timeout=10)
    blocker = await app.post_task("hang")
    await app.wait_for(blocker["id"], "running")
    waiting = [await app.post_task("noop") for _ in range(2)]
    await app.post_task("noop", delay=3600)
    await asyncio.sleep(0.3)

    response = await app.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = parse(response.text)

    listed = (await app.client.get("/tasks", params={"limit": 500})).json()["items"]
    by_status_name: dict[tuple[str, str], int] = {}
    for task in listed:
        key = (task["status"], task["name"])
        by_status_name[key] = by_status_name.get(key, 0) + 1
    gauges = {
        (dict(labels)["status"], dict(labels)["name"]): value
        for (name, labels), value in samples.items()
        if name == "tasks"
    }
    assert gauges == by_status_name
    assert samples[("tasks_queue_depth", ())] == 2  # the two behind the blocker; not the delayed
    assert samples[("tasks_oldest_pending_age_seconds", ())] > 0
    assert waiting

    def finished(name: str, status: str) -> float:
        return samples[("tasks_finished_total", (("name", name), ("status", status)))]

    assert finished("noop", "completed") == 3
    assert finished("boom", "failed") == 1
    assert finished("flaky", "completed") == 1
    assert samples[("tasks_retries_total", (("name", "flaky"),))] == 1
    # One observation per attempt: the flaky task ran twice.
    count = samples[("tasks_attempt_duration_seconds_count", (("name", "flaky"),))]
    assert count == 2
    inf = samples[("tasks_attempt_duration_seconds_bucket", (("le", "+Inf"), ("name", "noop")))]
    assert inf == 3


@pytest.mark.anyio
async def test_metric_counters_survive_a_restart(make_app: AppFactory) -> None:
    first = await make_app()
    await first.wait_for((await first.post_task("noop"))["id"])
    await first.client.get("/metrics")  # flushes this process's counts
    second = await make_app()  # another service on the same database
    await second.wait_for((await second.post_task("noop"))["id"])
    finished = ("tasks_finished_total", (("name", "noop"), ("status", "completed")))

    async def both_counted() -> bool:
        # Either service may have run the second task; the first flushes within a second.
        samples = parse((await second.client.get("/metrics")).text)
        assert samples[finished] <= 2
        return samples[finished] == 2

    await eventually(both_counted, timeout=5)


@pytest.mark.anyio
async def test_metrics_need_the_token_when_one_is_set(make_app: AppFactory) -> None:
    app: App = await make_app(api_token="t0k")
    assert (await app.client.get("/metrics")).status_code == 401
    ok = await app.client.get("/metrics", headers={"Authorization": "Bearer t0k"})
    assert ok.status_code == 200
