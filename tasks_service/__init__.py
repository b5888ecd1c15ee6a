"""Durable, observable, cancellable background tasks for FastAPI, without a broker.

What an app author needs is importable from here:

    from tasks_service import AddTask, ServiceDep, TaskService, create_app

The names are loaded on first use: `tasks` (the @task API) imports this package's
stdlib-only `models` and `config`, and must not pull in the web layer while it does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks_service.app import create_app as create_app
    from tasks_service.config import Settings as Settings
    from tasks_service.models import Task as Task
    from tasks_service.models import TaskRequest as TaskRequest
    from tasks_service.models import TaskStatus as TaskStatus
    from tasks_service.service import TaskService as TaskService
    from tasks_service.web.deps import AddTask as AddTask
    from tasks_service.web.deps import ServiceDep as ServiceDep

_WHERE = {
    "create_app": "tasks_service.app",
    "Settings": "tasks_service.config",
    "Task": "tasks_service.models",
    "TaskRequest": "tasks_service.models",
    "TaskStatus": "tasks_service.models",
    "TaskService": "tasks_service.service",
    "AddTask": "tasks_service.web.deps",
    "ServiceDep": "tasks_service.web.deps",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'tasks_service' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
