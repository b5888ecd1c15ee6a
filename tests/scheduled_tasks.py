"""Scheduled task types, loaded only by the tests about schedules (TASKS_MODULES)."""

from __future__ import annotations

import asyncio
import os

from tasks import Context, every, task


def _note(line: str) -> None:
    path = os.environ.get("TICKS_FILE")
    if path:
        with open(path, "a") as file:
            file.write(line + "\n")


@task(schedule=every(seconds=1))
async def tick(ctx: Context) -> str:
    """Notes each run in $TICKS_FILE, the side effect the tests count."""
    _note(ctx.task_id)
    return ctx.task_id


@task(schedule=every(seconds=1))
async def slow_tick(ctx: Context) -> None:
    """Runs longer than its interval: later ticks must be skipped, not piled up."""
    _note("slow " + ctx.task_id)
    await asyncio.sleep(2.5)
