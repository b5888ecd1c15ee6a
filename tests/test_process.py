"""Real `uvicorn main:app` processes: crashes, restarts and signals lose nothing."""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.harness import ServerFactory, all_tasks, get, post, stop_gracefully, wait_until
from tests.helpers import TERMINAL, statuses

pytestmark = pytest.mark.slow


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_sigkill_mid_run_then_restart_loses_nothing(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    server = server_factory(env={"TASKS_CONCURRENCY": "8"}).start()
    with ThreadPoolExecutor(16) as pool:
        accepted = list(
            pool.map(
                lambda i: post(
                    server, "record", params={"path": str(marks), "mark": str(i), "seconds": 0.2}
                )["id"],
                range(300),
            )
        )
    wait_until(lambda: len(lines(marks)) >= 60, what="some tasks to run")
    server.kill()
    ran_before_crash = len(lines(marks))
    assert ran_before_crash < 300, "the crash came too late to prove anything"

    restarted = server_factory(env={"TASKS_CONCURRENCY": "8"}).start()
    wait_until(
        lambda: all(t["status"] in TERMINAL for t in all_tasks(restarted)),
        what="every task to finish after the restart",
    )
    tasks = all_tasks(restarted)
    assert {t["id"] for t in tasks} == set(accepted)
    assert statuses(tasks) == {"completed": 300}
    # Every task's side effect happened; at-least-once allows a few repeats, at most the
    # ones that were running when the process died.
    runs = collections.Counter(lines(marks))
    assert set(runs) == {str(i) for i in range(300)}
    repeated = sum(count - 1 for count in runs.values())
    assert repeated <= 8
    interrupted = [t for t in tasks if t["attempts"] > 1]
    assert len(interrupted) == repeated
    assert all(t["attempts"] == 2 for t in interrupted)


def test_sigterm_with_enough_grace_lets_running_tasks_finish(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(env={"TASKS_SHUTDOWN_GRACE": "20"}).start()
    task = post(server, "sleep", params={"seconds": 1.5, "steps": 3})
    wait_until(lambda: get(server, task["id"])["status"] == "running", what="running")
    stop_gracefully(server)

    restarted = server_factory().start()
    done = get(restarted, task["id"])
    assert done["status"] == "completed"
    assert done["attempts"] == 1
    assert done["result"] == {"slept": 1.5}


def test_sigterm_with_short_grace_hands_tasks_back_and_they_run_after_restart(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    server = server_factory(env={"TASKS_SHUTDOWN_GRACE": "0.5"}).start()
    long = post(server, "sleep", params={"seconds": 3, "steps": 30})
    sync = post(server, "sync_wait", params={"seconds": 3})
    wait_until(lambda: get(server, long["id"])["status"] == "running", what="long running")
    wait_until(lambda: get(server, sync["id"])["status"] == "running", what="sync running")
    # Due during the grace period: must not start once shutdown has begun.
    later = post(server, "record", params={"path": str(marks), "mark": "late"}, delay=0.2)
    stop_gracefully(server)
    assert "handed back" in server.log_path.read_text()
    assert lines(marks) == []

    restarted = server_factory(env={"TASKS_SHUTDOWN_GRACE": "0.5"}).start()
    for task in (long, sync, later):
        wait_until(lambda t=task: get(restarted, t["id"])["status"] in TERMINAL, what="finish")
    long_done, sync_done, later_done = (get(restarted, t["id"]) for t in (long, sync, later))
    assert long_done["status"] == "completed" and long_done["attempts"] == 2
    assert long_done["error"] is None
    assert sync_done["status"] == "completed" and sync_done["attempts"] == 2
    assert sync_done["result"] == "waited"
    assert later_done["status"] == "completed" and later_done["attempts"] == 1
    assert lines(marks) == ["late"]


def test_a_task_that_keeps_killing_the_process_ends_failed(
    server_factory: ServerFactory,
) -> None:
    server = server_factory().start()
    task = post(server, "kill_process")
    server.wait()
    for _ in range(2):
        # Each restart runs it again (a crash is not held against max_attempts) ...
        server = server_factory().start(wait_healthy=False)
        server.wait()
    # ... until the third interruption, after which it is given up on.
    server = server_factory().start()
    done = get(server, task["id"])
    assert done["status"] == "failed"
    assert done["attempts"] == 3
    assert "interrupted 3 times" in done["error"]
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_cancel_reaches_a_running_task_in_a_real_server(server_factory: ServerFactory) -> None:
    server = server_factory().start()
    task = post(server, "sleep", params={"seconds": 60})
    wait_until(lambda: get(server, task["id"])["status"] == "running", what="running")
    response = httpx.post(f"{server.url}/tasks/{task['id']}/cancel")
    assert response.status_code == 202
    wait_until(lambda: get(server, task["id"])["status"] == "cancelled", timeout=5, what="cancel")
