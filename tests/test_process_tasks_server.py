"""process=True tasks under real `uvicorn main:app`: SIGKILL, SIGTERM and --workers leave no
worker process behind and lose no task (both stores)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.harness import ServerFactory, get, post, stop_gracefully, wait_until
from tests.helpers import BOTH_STORES
from tests.test_process_tasks import alive

pytestmark = [pytest.mark.slow, BOTH_STORES]

MODULES = "tests.process_tasks,tests.sample_tasks"


def worker_pid(marker: Path) -> int:
    wait_until(lambda: marker.exists() and marker.read_text() != "", 30, "the worker's pid")
    return int(marker.read_text())


def test_sigkill_of_the_server_leaves_no_worker_and_the_task_runs_again(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    marker = tmp_path / "first"
    env = {"TASKS_MODULES": MODULES}
    server = server_factory(env=env).start()
    task = post(server, "long_first_time", params={"marker": str(marker)})
    pid = worker_pid(marker)
    server.kill()
    wait_until(lambda: not alive(pid), 5, "the orphaned worker process to die")
    server = server_factory(env=env).start()
    wait_until(lambda: get(server, task["id"])["status"] == "completed", 30, "the re-run")
    done = get(server, task["id"])
    assert done["attempts"] == 2
    assert done["result"] != pid


def test_graceful_shutdown_gives_the_grace_then_stops_the_worker_and_requeues(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    marker = tmp_path / "first"
    env = {"TASKS_MODULES": MODULES, "TASKS_SHUTDOWN_GRACE": "1"}
    server = server_factory(env=env).start()
    task = post(server, "long_first_time", params={"marker": str(marker)})
    pid = worker_pid(marker)
    asked = time.monotonic()
    stop_gracefully(server)
    assert time.monotonic() - asked < 20  # the grace, then a kill: not the task's minute
    assert not alive(pid)
    server = server_factory(env=env).start()
    wait_until(lambda: get(server, task["id"])["status"] == "completed", 30, "the re-run")
    done = get(server, task["id"])
    assert done["error"] is None  # handed back, never failed


def test_a_cancel_sent_to_any_worker_kills_the_task_in_the_other(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    env = {"TASKS_MODULES": MODULES}
    server = server_factory(env=env, workers=2).start()
    for attempt in range(4):
        marker = tmp_path / f"first-{attempt}"
        task = post(server, "long_first_time", params={"marker": str(marker)})
        pid = worker_pid(marker)
        # A fresh connection each time: either worker may answer the cancel.
        response = httpx.post(f"{server.url}/tasks/{task['id']}/cancel", timeout=10)
        assert response.status_code == 202, response.text
        task_id = task["id"]
        wait_until(lambda: get(server, task_id)["status"] == "cancelled", 10, "the cancel")  # noqa: B023
        wait_until(lambda: not alive(pid), 5, "the worker process to be killed")  # noqa: B023
    server.signal(signal.SIGTERM)
    server.wait()
