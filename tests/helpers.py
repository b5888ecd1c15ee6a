"""Helpers for the tests: the app in this process (`App`, from the `make_app` and `app`
fixtures), task statuses, and the marker that runs a module on both stores. Real uvicorn
processes are in tests/harness.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tasks_service import TaskService
from tasks_service.models import TaskStatus

# In a module's `pytestmark`: each of its tests that runs the app runs on SQLite and on
# PostgreSQL (conftest.py parametrises their `database` fixture).
BOTH_STORES = pytest.mark.both_stores

TERMINAL = {s.value for s in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)}


def statuses(tasks: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task["status"]] = counts.get(task["status"], 0) + 1
    return counts


@dataclass
class App:
    """The app running in this process: an HTTP client for it, and its Python API."""

    client: httpx.AsyncClient
    service: TaskService

    async def post_task(self, name: str, **body: Any) -> dict[str, Any]:
        response = await self.client.post("/tasks", json={"name": name, **body})
        assert response.status_code == 202, response.text
        return response.json()

    async def task(self, task_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/tasks/{task_id}")
        assert response.status_code == 200, response.text
        return response.json()

    async def wait_for(self, task_id: str, *statuses: str, timeout: float = 15.0) -> dict[str, Any]:
        """Poll until the task reaches one of `statuses` (terminal ones by default)."""
        wanted = set(statuses or ("completed", "failed", "cancelled"))
        deadline = time.monotonic() + timeout
        while True:
            task = await self.task(task_id)
            if task["status"] in wanted:
                return task
            if time.monotonic() > deadline:
                raise AssertionError(f"task never became {wanted}: {task}")
            await asyncio.sleep(0.02)


AppFactory = Callable[..., Awaitable[App]]
