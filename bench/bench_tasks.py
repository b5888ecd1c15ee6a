"""Task types for benchmarks (TASKS_MODULES=bench.bench_tasks)."""

from __future__ import annotations

from tasks import Context, task


@task
async def noop(ctx: Context) -> None:
    """Does nothing: what is measured is the service around it."""


@task
def noop_sync(ctx: Context) -> None:
    """Does nothing, in a thread."""
