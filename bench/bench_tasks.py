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
