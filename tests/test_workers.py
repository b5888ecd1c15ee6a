"""`uvicorn main:app --workers 3`: every promise holds across processes sharing one file."""

from __future__ import annotations

import collections
import os
import signal
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.harness import (
    SAMPLE_MODULES,
    Server,
    ServerFactory,
    all_tasks,
    get,
    post,
    stop_gracefully,
    wait_until,
)
from tests.helpers import TERMINAL, statuses

pytestmark = pytest.mark.slow

SCHEDULED = ",".join((*SAMPLE_MODULES, "tests.scheduled_tasks"))


def owners(db: Path) -> dict[str, str]:
    """Which process each running task belongs to (a peek at the file, not the API)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=15) as conn:
        rows = conn.execute("SELECT id, owner FROM tasks WHERE status = 'running'").fetchall()
    conn.close()
    return {task_id: owner for task_id, owner in rows}


def test_each_task_runs_exactly_once_across_workers(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    server = server_factory(workers=3, env={"TASKS_CONCURRENCY": "4"}).start()

    def start(i: int) -> str:
        params = {"path": str(marks), "mark": str(i), "seconds": 0.02}
        return post(server, "record_pid", params=params)["id"]

    with ThreadPoolExecutor(16) as pool:
        accepted = set(pool.map(start, range(400)))
    wait_until(
        lambda: all(t["status"] in TERMINAL for t in all_tasks(server)), what="all tasks done"
    )
    tasks = all_tasks(server)
    assert {t["id"] for t in tasks} == accepted
    assert statuses(tasks) == {"completed": 400}
    runs = [line.split() for line in marks.read_text().splitlines()]
    per_mark = collections.Counter(mark for mark, _ in runs)
    assert per_mark == {str(i): 1 for i in range(400)}  # the side effect, once each
    assert len({pid for _, pid in runs}) >= 2  # and the work was shared


def test_a_one_second_schedule_fires_once_per_tick_across_workers(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    ticks_file = tmp_path / "ticks"
    env = {"TASKS_MODULES": SCHEDULED, "TICKS_FILE": str(ticks_file)}
    server = server_factory(workers=3, env=env).start()
    time.sleep(6.5)
    assert httpx.post(f"{server.url}/schedules/tick/pause").json()["paused"]
    time.sleep(0.5)
    runs = [t for t in all_tasks(server) if t["schedule_id"] == "tick"]
    ticks = sorted(datetime.fromisoformat(t["run_at"]).timestamp() for t in runs)
    assert len(ticks) >= 5
    assert ticks == [ticks[0] + i for i in range(len(ticks))]  # each tick once, none missed
    done = [t for t in runs if t["status"] == "completed"]
    ran = [line for line in ticks_file.read_text().splitlines() if " " not in line]
    assert sorted(ran) == sorted(t["id"] for t in done)  # each fired task ran once


def test_pause_survives_a_restart_of_all_workers(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    env = {"TASKS_MODULES": SCHEDULED, "TICKS_FILE": str(tmp_path / "ticks")}
    server = server_factory(workers=3, env=env).start()
    response = httpx.post(f"{server.url}/schedules/tick/pause")
    assert response.status_code == 200 and response.json()["paused"] is True
    stop_gracefully(server)
    restarted = server_factory(workers=3, env=env).start()
    since = time.time()
    for _ in range(6):  # whichever process answers, it is paused
        listed = {s["id"]: s for s in httpx.get(f"{restarted.url}/schedules").json()}
        assert listed["tick"]["paused"] is True
        assert listed["slow_tick"]["paused"] is False
    time.sleep(2.5)
    fired = [
        t
        for t in all_tasks(restarted)
        if t["schedule_id"] == "tick"
        and datetime.fromisoformat(t["created_at"]).timestamp() > since
    ]
    assert fired == []


def test_cancel_through_any_worker_stops_the_task_where_it_runs(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(workers=3, env={"TASKS_CONCURRENCY": "4"}).start()
    seen_workers = {httpx.get(f"{server.url}/health").json()["worker"] for _ in range(30)}
    assert len(seen_workers) >= 2  # fresh connections land on different processes
    tasks = [post(server, "hang")["id"] for _ in range(9)]
    wait_until(lambda: len(owners(server.db)) == 9, what="all nine running")
    assert len(set(owners(server.db).values())) >= 2
    for task_id in tasks:
        response = httpx.post(f"{server.url}/tasks/{task_id}/cancel")  # a new connection each
        assert response.status_code == 202
        wait_until(lambda t=task_id: get(server, t)["status"] == "cancelled", timeout=5)


def test_sigkill_of_one_worker_process_its_tasks_still_complete(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(workers=3, env={"TASKS_CONCURRENCY": "4"}).start()
    tasks = [post(server, "sleep", params={"seconds": 2, "steps": 4})["id"] for _ in range(9)]
    wait_until(lambda: len(owners(server.db)) == 9, what="all nine running")
    running = owners(server.db)
    victim_owner = collections.Counter(running.values()).most_common(1)[0][0]
    victim_pid = int(victim_owner.split("-")[0])
    assert victim_pid != server.process.pid  # a worker, not uvicorn's parent
    victims = [t for t, owner in running.items() if owner == victim_owner]
    os.kill(victim_pid, signal.SIGKILL)
    wait_until(lambda: all(get(server, t)["status"] in TERMINAL for t in tasks), what="all finish")
    for task_id in tasks:
        task = get(server, task_id)
        assert task["status"] == "completed", task
        assert task["attempts"] == (2 if task_id in victims else 1)


def fresh_answers(server: Server, path: str, count: int = 16) -> list[httpx.Response]:
    """`count` GETs, each on a new connection: they land on different worker processes."""
    return [httpx.get(f"{server.url}{path}", timeout=10) for _ in range(count)]


def test_a_schedule_made_over_http_reaches_every_worker_and_fires_once_per_tick(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    server = server_factory(workers=2).start()
    server.wait_every_worker()
    body = {"id": "api-tick", "task": "record", "params": {"path": str(marks), "mark": "x"}}
    response = httpx.post(f"{server.url}/schedules", json={**body, "every": 1}, timeout=10)
    assert response.status_code == 201, response.text
    wait_until(
        lambda: all(r.status_code == 200 for r in fresh_answers(server, "/schedules/api-tick")),
        timeout=10,
        what="every worker to know the new schedule",
    )
    time.sleep(4)
    changed = httpx.patch(f"{server.url}/schedules/api-tick", json={"every": 3600}, timeout=10)
    assert changed.status_code == 200, changed.text
    wait_until(
        lambda: all(
            r.json().get("every") == 3600 for r in fresh_answers(server, "/schedules/api-tick")
        ),
        timeout=10,
        what="every worker to know the change",
    )
    wait_until(
        lambda: all(t["status"] in TERMINAL for t in all_tasks(server)), what="runs to finish"
    )
    runs = [t for t in all_tasks(server) if t["schedule_id"] == "api-tick"]
    ticks = sorted(datetime.fromisoformat(t["run_at"]).timestamp() for t in runs)
    assert len(ticks) >= 3
    assert ticks == [ticks[0] + i for i in range(len(ticks))]  # each tick once, none missed
    assert statuses(runs) == {"completed": len(runs)}
    assert len(marks.read_text().split()) == len(runs)  # each run executed once


def test_a_schedule_deleted_through_one_worker_fires_in_none(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    server = server_factory(workers=2).start()
    server.wait_every_worker()
    body = {"id": "doomed", "task": "record", "params": {"path": str(marks), "mark": "x"}}
    assert httpx.post(f"{server.url}/schedules", json={**body, "every": 1}).status_code == 201
    wait_until(lambda: marks.exists(), timeout=10, what="a first run")
    assert httpx.delete(f"{server.url}/schedules/doomed").status_code == 204
    wait_until(
        lambda: all(r.status_code == 404 for r in fresh_answers(server, "/schedules/doomed")),
        timeout=10,
        what="every worker to forget it",
    )
    fired = len([t for t in all_tasks(server) if t["schedule_id"] == "doomed"])
    time.sleep(2.5)
    assert len([t for t in all_tasks(server) if t["schedule_id"] == "doomed"]) == fired
    # Made again with the same id, it is a new schedule, known to every worker after a restart.
    assert (
        httpx.post(f"{server.url}/schedules", json={**body, "cron": "0 4 * * *"}).status_code == 201
    )
    stop_gracefully(server)
    restarted = server_factory(workers=2).start()
    restarted.wait_every_worker()
    for response in fresh_answers(restarted, "/schedules/doomed"):
        assert response.status_code == 200 and response.json()["cron"] == "0 4 * * *"
