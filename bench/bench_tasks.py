"""Task types for benchmarks (TASKS_MODULES=bench.bench_tasks)."""

from __future__ import annotations

import asyncio
import time

from tasks import Context, task


@task
async def noop(ctx: Context) -> None:
    """Does nothing: what is measured is the service around it."""


@task
def noop_sync(ctx: Context) -> None:
    """Does nothing, in a thread."""


# Monotonic start times of `stamp` tasks, by task id: how long pickup took.
started_at: dict[str, float] = {}


@task
async def stamp(ctx: Context) -> None:
    """Notes when it started (time.perf_counter), for pickup latency."""
    started_at[ctx.task_id] = time.perf_counter()


@task
async def clock(ctx: Context) -> float:
    """Returns the wall-clock time of its first line: pickup seen from another process."""
    return time.time()


@task
async def wait_forever(ctx: Context) -> None:
    """Runs until cancelled, for cancel latency."""
    await asyncio.Event().wait()


def _burn(ctx: Context, seconds: float, check: bool) -> int:
    """Burns CPU for `seconds` (the pid goes out first, as the progress message)."""
    import os

    ctx.progress(0, f"pid {os.getpid()}")
    deadline = time.monotonic() + seconds
    spins = 0
    while time.monotonic() < deadline:
        if check and ctx.cancelled:
            break
        for _ in range(20_000):
            spins += 1
    return spins


@task(process=True)
def burn_process(ctx: Context, seconds: float) -> int:
    """CPU-bound code that never looks at ctx.cancelled, in a worker process."""
    return _burn(ctx, seconds, check=False)


@task
def burn_thread(ctx: Context, seconds: float) -> int:
    """The same in a thread (it looks at ctx.cancelled, or the benchmark could not end)."""
    return _burn(ctx, seconds, check=True)


@task(process=True)
def noop_process(ctx: Context) -> None:
    """Does nothing, in a worker process: what one process attempt costs."""


@task(concurrency=1, limit_key="key")
async def one_per_key(ctx: Context, key: int, seconds: float) -> None:
    """At most one running per key, anywhere: e.g. one sync per account."""
    await asyncio.sleep(seconds)


@task(rate_limit="100/s")
async def hundred_per_second(ctx: Context) -> None:
    """At most 100 starts in any second, anywhere: e.g. a rate-limited API."""
