"""process=True task types for the tests of worker processes (TASKS_MODULES=tests.process_tasks)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Literal

from tasks import Context, PermanentError, task


def _note_pid(path: str) -> None:
    if path:
        with open(path, "a") as file:
            file.write(f"{os.getpid()}\n")


@task(process=True)
def crunch(
    ctx: Context, seconds: float = 0.0, pid_file: str = "", cooperative: bool = False
) -> dict[str, int]:
    """Burns CPU for `seconds`, never looking at ctx.cancelled unless `cooperative`."""
    _note_pid(pid_file)
    deadline = time.monotonic() + seconds
    spins = 0
    while time.monotonic() < deadline:
        if cooperative and ctx.cancelled:
            break
        for _ in range(10_000):
            spins += 1
    return {"pid": os.getpid(), "spins": spins}


@task(process=True, timeout=1)
def crunch_with_timeout(ctx: Context, seconds: float, pid_file: str = "") -> int:
    _note_pid(pid_file)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass
    return os.getpid()


@task(process=True)
def report_steps(ctx: Context, steps: int, pause: float = 0.05) -> int:
    for step in range(1, steps + 1):
        ctx.progress(step * 100 / steps, f"step {step} of {steps}")
        time.sleep(pause)
    return steps


@task(process=True, max_attempts=2)
def die(ctx: Context, how: Literal["sigkill", "exit"], marker: str) -> str:
    """Dies on its first attempt (by SIGKILL or os._exit(3)), succeeds on the next."""
    if ctx.attempt == 1:
        Path(marker).write_text(str(os.getpid()))
        if how == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(3)
    return f"survived attempt {ctx.attempt}"


@task(process=True)
def fail_in_process(ctx: Context, permanent: bool = False) -> None:
    if permanent:
        raise PermanentError("cannot be done")
    raise ValueError("bad input in the child")


@task(process=True)
def unserialisable(ctx: Context) -> object:
    return {1, 2, 3}


@task(process=True)
async def async_in_process(ctx: Context, text: str) -> str:
    await ctx.progress(50, "half")
    return f"{text} from {os.getpid()}"


@task(process=True)
def long_first_time(ctx: Context, marker: str) -> int:
    """Burns CPU for a minute on its first start (noting its pid), returns at once after."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pass
    return os.getpid()


_ballast: list[bytes] = []


@task(process=True)
def grow(ctx: Context, megabytes: int) -> int:
    """Keeps `megabytes` more of memory alive in its worker (a leak), returns its pid."""
    _ballast.append(b"x" * (megabytes * 2**20))
    return os.getpid()
