"""Workflows under real `uvicorn main:app`: SIGKILL mid-workflow then a restart on the same
database, and children run by another --workers process waking their parent (both stores)."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from tests.harness import ServerFactory, get, post, wait_until
from tests.helpers import BOTH_STORES

pytestmark = [pytest.mark.slow, BOTH_STORES]

MODULES = "tests.workflow_tasks,tests.sample_tasks"


def marks(path: Path) -> collections.Counter[str]:
    lines = path.read_text().splitlines() if path.exists() else []
    return collections.Counter(line.split()[0] for line in lines)


def test_sigkill_mid_workflow_then_a_restart_runs_no_finished_child_again(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "runs"
    env = {"TASKS_MODULES": MODULES}
    server = server_factory(env=env).start()
    parent = post(server, "workflow_of_five", params={"path": str(path), "seconds": 0.4})
    wait_until(lambda: marks(path)["step2"] >= 1, 30, "the third step to begin")
    server.kill()
    finished_before = {mark for mark in ("step0", "step1") if marks(path)[mark]}
    server = server_factory(env=env).start()
    wait_until(lambda: get(server, parent["id"])["status"] == "completed", 60, "the workflow")
    done = get(server, parent["id"])
    assert done["result"] == [f"step{i}" for i in range(5)]
    runs = marks(path)
    assert finished_before == {"step0", "step1"}
    for mark in finished_before:
        assert runs[mark] == 1, runs  # completed before the crash: never run again
    assert runs["step2"] in (1, 2)  # interrupted itself: may run twice
    assert runs["step3"] == runs["step4"] == 1


def test_children_run_by_another_worker_wake_their_parent(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    path = tmp_path / "runs"
    env = {"TASKS_MODULES": MODULES, "TASKS_CONCURRENCY": "2"}
    server = server_factory(env=env, workers=2).start()
    server.wait_every_worker()
    parent = post(server, "spread", params={"path": str(path), "n": 12})
    wait_until(lambda: get(server, parent["id"])["status"] == "completed", 60, "the parent")
    parent_pid = get(server, parent["id"])["result"]
    child_pids = {int(line.split()[1]) for line in path.read_text().splitlines()}
    assert child_pids - {parent_pid}, "no child ran in the other worker"
