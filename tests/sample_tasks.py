"""Task types the tests start, loaded through TASKS_MODULES=tests.sample_tasks."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from tasks import Context, PermanentError, task

# Probes for the concurrency test: how many tasks run at once in this process.
_running_now = 0
_running_most = 0
_probe_lock = threading.Lock()


def running_most() -> int:
    return _running_most


@task
async def noop(ctx: Context) -> None:
    """Does nothing; for counting and speed."""


@task
async def echo(ctx: Context, text: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Returns what it was given."""
    return {"text": text, "extra": extra}


@task
async def record(ctx: Context, path: str, mark: str, seconds: float = 0.0) -> str:
    """Appends `mark` to the file at `path` (a side effect the tests count), then waits."""
    with open(path, "a") as file:
        file.write(mark + "\n")
    await asyncio.sleep(seconds)
    return mark


@task
def record_sync(ctx: Context, path: str, mark: str) -> str:
    with open(path, "a") as file:
        file.write(mark + "\n")
    return mark


@task(max_attempts=3)
async def flaky(ctx: Context, path: str, failures: int) -> int:
    """Fails `failures` times (counted in the file at `path`), then succeeds."""
    file = Path(path)
    seen = int(file.read_text()) if file.exists() else 0
    file.write_text(str(seen + 1))
    if seen < failures:
        raise RuntimeError(f"failure number {seen + 1}")
    return ctx.attempt


@task
async def boom(ctx: Context, message: str = "it broke") -> None:
    raise ValueError(message)


@task(max_attempts=5)
async def fatal(ctx: Context) -> None:
    raise PermanentError("no point retrying")


@task
async def not_json(ctx: Context) -> object:
    return {1, 2, 3}


@task
async def hang(ctx: Context, seconds: float = 3600) -> str:
    await asyncio.sleep(seconds)
    return "woke"


@task
def sync_wait(ctx: Context, seconds: float, cooperative: bool = True) -> str:
    """Waits in a thread; when `cooperative`, stops as soon as a cancel is asked for."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cooperative and ctx.cancelled:
            return "stopped early"
        time.sleep(0.01)
    return "waited"


@task
def sync_progress(ctx: Context, steps: int) -> int:
    for step in range(1, steps + 1):
        ctx.progress(step * 100 / steps, f"{step}/{steps}")
        time.sleep(0.02)
    return steps


@task
async def probe(ctx: Context, seconds: float) -> int:
    """Counts how many probes run at once in this process."""
    global _running_now, _running_most
    with _probe_lock:
        _running_now += 1
        _running_most = max(_running_most, _running_now)
    try:
        await asyncio.sleep(seconds)
    finally:
        with _probe_lock:
            _running_now -= 1
    return _running_most


@task
def sync_probe(ctx: Context, seconds: float) -> int:
    global _running_now, _running_most
    with _probe_lock:
        _running_now += 1
        _running_most = max(_running_most, _running_now)
    try:
        time.sleep(seconds)
    finally:
        with _probe_lock:
            _running_now -= 1
    return _running_most


@task
async def kill_process(ctx: Context) -> None:
    """Kills the process running it, as a crash would."""
    os.kill(os.getpid(), signal.SIGKILL)


@task(timeout=0.2)
async def too_slow(ctx: Context) -> None:
    await asyncio.sleep(30)


@task
async def bounded(ctx: Context, count: Annotated[int, Field(ge=1, le=10)]) -> int:
    return count


@task
async def record_pid(ctx: Context, path: str, mark: str, seconds: float = 0.0) -> int:
    """Appends `mark` and the pid of the process running it: which process ran what."""
    with open(path, "a") as file:
        file.write(f"{mark} {os.getpid()}\n")
    await asyncio.sleep(seconds)
    return os.getpid()


@task
async def record_host(ctx: Context, path: str, mark: str, seconds: float = 0.0) -> str:
    """Appends `mark`, the host name, the pid and the time of this start: which host ran
    what, and when (pids alone mean nothing across hosts)."""
    with open(path, "a") as file:
        file.write(f"{mark} {socket.gethostname()} {os.getpid()} {time.time():.6f}\n")
    await asyncio.sleep(seconds)
    return socket.gethostname()
