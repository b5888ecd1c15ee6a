"""The Python API for writing tasks: `@task`, `Context`, and the schedules `every` and `cron`.

Task modules import only this package (and helpers such as httpx); they know nothing of
HTTP, the store or the runner.
"""

from tasks.context import ChildFailed, Context, Services, TaskStopped, WorkflowChanged
from tasks.registry import (
    BUILTIN_MODULES,
    FileId,
    Limits,
    PermanentError,
    RateLimit,
    TaskDeclarationError,
    TaskDefinition,
    TaskRegistry,
    task,
)
from tasks.schedules import Cron, Every, Schedule, cron, every

__all__ = [
    "BUILTIN_MODULES",
    "ChildFailed",
    "Context",
    "Cron",
    "Every",
    "FileId",
    "Limits",
    "PermanentError",
    "RateLimit",
    "Schedule",
    "Services",
    "TaskDeclarationError",
    "TaskDefinition",
    "TaskRegistry",
    "TaskStopped",
    "WorkflowChanged",
    "cron",
    "every",
    "task",
]
