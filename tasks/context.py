"""What a running task gets as its first argument."""

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

    __slots__ = ("_cancel", "_loop", "_sink", "attempt", "services", "task_id")

    def __init__(
        self,
        task_id: str,
        attempt: int,
        sink: ProgressSink,
        loop: asyncio.AbstractEventLoop | None,
        services: Services | None = None,
    ) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.services = services
        self._sink = sink
        self._loop = loop
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


def _in_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
