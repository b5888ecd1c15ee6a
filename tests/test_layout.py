"""The app's folder belongs to its author: modules of their own beside main.py break nothing.

uvicorn puts the app's folder first on sys.path, so a product module named `models` or
`config` at the top would be shadowed by the author's (the FastAPI template has both).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.harness import ROOT, free_port

# What the product's design keeps at the top of the tree; everything else is in the package.
TOP_LEVEL_MODULES = {"main.py", "scheduler.py", "store.py"}

USER_MODELS = '''
"""The app author's own models, as in FastAPI's full-stack template."""
from pydantic import BaseModel

class User(BaseModel):
    email: str

Task = "the author's own Task, nothing like the service's"
'''
USER_CONFIG = '''
"""The app author's own settings module."""
settings = {"greeting": "hello"}
Settings = None  # a name the service's own settings class also has
'''
USER_JOBS = '''
"""Task types of the author's that use the author's own modules."""
from config import settings
from models import User
from tasks import Context, task

@task
async def greet(ctx: Context, email: str) -> str:
    return f"{settings['greeting']} {User(email=email).email}"
'''


def test_the_top_level_holds_only_what_the_design_fixes() -> None:
    python_files = {path.name for path in ROOT.glob("*.py")}
    assert python_files == TOP_LEVEL_MODULES


def test_tasks_imports_nothing_from_the_top_level_but_the_packages_plain_modules() -> None:
    allowed = {"tasks_service.models", "tasks_service.config"}
    for path in (ROOT / "tasks").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                top = node.module.split(".")[0]
                if top == "tasks_service":
                    assert node.module in allowed, f"{path.name} imports {node.module}"
                assert f"{top}.py" not in TOP_LEVEL_MODULES, f"{path.name} imports {top}"


@pytest.mark.slow
def test_an_authors_own_models_and_config_beside_main_break_nothing(tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    ignore = shutil.ignore_patterns("__pycache__")
    app_dir.mkdir()
    for name in TOP_LEVEL_MODULES:
        shutil.copy(ROOT / name, app_dir / name)
    for package in ("tasks", "tasks_service"):
        shutil.copytree(ROOT / package, app_dir / package, ignore=ignore)
    (app_dir / "models.py").write_text(USER_MODELS)
    (app_dir / "config.py").write_text(USER_CONFIG)
    (app_dir / "jobs.py").write_text(USER_JOBS)
    port = free_port()
    env = {
        **os.environ,
        "TASKS_DB": str(tmp_path / "tasks.db"),
        "TASKS_MODULES": "jobs",
        "TASKS_DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": "",
    }
    log_path = tmp_path / "server.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "main:app", "--port", str(port)],
            cwd=app_dir,
            env=env,
            stdout=log,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(server, url, log_path)
        created = httpx.post(f"{url}/tasks", json={"name": "greet", "params": {"email": "a@b.c"}})
        assert created.status_code == 202, created.text
        task = _wait_done(f"{url}/tasks/{created.json()['id']}")
        assert task["status"] == "completed", task
        assert task["result"] == "hello a@b.c"
        started = httpx.post(f"{url}/tasks", json={"name": "sleep", "params": {"seconds": 0}})
        assert _wait_done(f"{url}/tasks/{started.json()['id']}")["status"] == "completed"
    finally:
        server.terminate()
        server.wait(30)


def _wait_healthy(server: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"server exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"server never became healthy:\n{log_path.read_text()}")


def _wait_done(task_url: str) -> dict[str, object]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        task = httpx.get(task_url).json()
        if task["status"] in ("completed", "failed", "cancelled"):
            return dict(task)
        time.sleep(0.05)
    raise AssertionError(f"the task never finished: {task}")
