"""What a running task gets as its first argument: its id, progress, cancellation, children."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Generator
from pathlib import Path
from typing import Any, Protocol

from tasks_service.config import Settings

_MAX_MESSAGE = 1000


class ProgressSink(Protocol):
    """Where progress goes (the store); it keeps only the latest report per task."""

    def report_progress(self, task_id: str, percent: float, message: str | None) -> None: ...
    def progress_committed(self) -> asyncio.Future[None] | None: ...


class Services(Protocol):
    """What the service lends to its built-in tasks, through `ctx.services`."""

    settings: Settings

    def file_path(self, file_id: str) -> Path: ...
    async def purge_tasks(self, finished_before: float) -> int: ...
    async def cleanup_files(self, created_before: float) -> tuple[list[str], list[str]]: ...


class Family(Protocol):
    """What the runner lends a task to start child tasks and wait for them (durably: the
    n-th call of a parent finds the child its n-th call made before, on any re-run)."""

    async def start(self, parent: Context, task: Any, params: dict[str, Any], call: str) -> str: ...
    async def results(self, parent: Context, child_ids: list[str]) -> list[Any]: ...


class ChildFailed(Exception):
    """A child task ended failed or cancelled; raised by `ctx.run` and `ctx.map`."""

    def __init__(self, child_id: str, name: str, status: str, error: str | None) -> None:
        reason = f": {error}" if error else ""
        super().__init__(f"child task {child_id} ({name}) ended {status}{reason}")
        self.child_id = child_id
        self.name = name
        self.status = status
        self.error = error


class WorkflowChanged(Exception):
    """A re-run of a task made a different call than its earlier run made at that point."""


class TaskStopped(BaseException):
    """Raised in a plain `def` task waiting for children when its cancel is asked (or the
    service stops): a BaseException, so that `except Exception` does not swallow it."""


class ProgressAck:
    """Awaiting it waits until the progress reported so far is stored; ignoring it is fine."""

    __slots__ = ("_future",)

    def __init__(self, future: asyncio.Future[None] | None) -> None:
        self._future = future

    def __await__(self) -> Generator[Any, None, None]:
        if self._future is not None:
            yield from asyncio.shield(self._future).__await__()


class Context:
    """A task's view of its own run: id, attempt, progress reports, cancellation.

    `progress()` is awaitable in `async def` tasks and a plain call in `def` tasks.
    `cancelled` turns true once a cancel was asked for (or the attempt timed out, or the
    service is shutting down past its grace period); a `def` task should check it and stop.
    """

    __slots__ = ("_calls", "_cancel", "_family", "_loop", "_sink", "attempt", "services", "task_id")

    def __init__(
        self,
        task_id: str,
        attempt: int,
        sink: ProgressSink,
        loop: asyncio.AbstractEventLoop | None,
        services: Services | None = None,
        family: Family | None = None,
    ) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.services = services
        self._sink = sink
        self._loop = loop
        self._family = family
        self._calls = 0  # child calls made so far by this run: their durable names
        self._cancel = False  # a plain flag: one writer, and a bool is read atomically

    @property
    def cancelled(self) -> bool:
        return self._cancel

    def progress(self, percent: float, message: str | None = None) -> ProgressAck:
        """Report progress from 0 to 100, with an optional message."""
        percent = float(percent)
        if not (0 <= percent <= 100) or math.isnan(percent):
            raise ValueError(f"progress must be between 0 and 100, got {percent!r}")
        if message is not None:
            message = str(message)[:_MAX_MESSAGE]
        if self._loop is None:  # in a child process: the sink sends it to the server
            self._sink.report_progress(self.task_id, percent, message)
            return ProgressAck(None)
        if _in_loop_thread(self._loop):
            self._sink.report_progress(self.task_id, percent, message)
            return ProgressAck(self._sink.progress_committed())
        self._loop.call_soon_threadsafe(self._sink.report_progress, self.task_id, percent, message)
        return ProgressAck(None)

    def request_cancel(self) -> None:
        """Called by the runner: from now on `cancelled` is true."""
        self._cancel = True

    # -- children --------------------------------------------------------------------------

    def run(self, task: Any, /, key: str | None = None, **params: Any) -> Any:
        """Start a child task and wait for its result (`await` it in an `async def` task; a
        plain call in a `def` task). Raises ChildFailed if the child fails or is cancelled.

        `task` is a task function or a registered name; `params` are validated as at
        POST /tasks. The call is named by its place among this task's calls (or by `key`):
        on a re-run the same call gets the same child back, and a completed child never
        runs again.
        """
        return self._call(self._run_one(self._need_family(), task, params, self._call_name(key)))

    def map(self, task: Any, items: list[dict[str, Any]], /, key: str | None = None) -> Any:
        """One child per item of params, all started at once; their results, in order."""
        names = [self._call_name(None if key is None else f"{key}:{i}") for i in range(len(items))]
        return self._call(self._run_many(self._need_family(), task, list(items), names))

    def start(self, task: Any, /, key: str | None = None, **params: Any) -> Any:
        """Start a child task without waiting for it; its id."""
        family = self._need_family()
        return self._call(family.start(self, task, params, self._call_name(key)))

    async def _run_one(self, family: Family, task: Any, params: dict[str, Any], call: str) -> Any:
        child = await family.start(self, task, params, call)
        (result,) = await family.results(self, [child])
        return result

    async def _run_many(
        self, family: Family, task: Any, items: list[dict[str, Any]], calls: list[str]
    ) -> Any:
        children = await asyncio.gather(
            *(
                family.start(self, task, params, call)
                for params, call in zip(items, calls, strict=True)
            )
        )
        return await family.results(self, list(children))

    def _call_name(self, key: str | None) -> str:
        self._calls += 1
        return f"{self._calls}" if key is None else f"key:{key}"

    def _need_family(self) -> Family:
        if self._family is None:
            raise RuntimeError(
                "this task cannot start child tasks here (process=True tasks, or no service)"
            )
        return self._family

    def _call(self, coroutine: Any) -> Any:
        """An awaitable in the loop's thread (async tasks); the result, in a task's thread."""
        if self._loop is None or _in_loop_thread(self._loop):
            return coroutine
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


def _in_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
