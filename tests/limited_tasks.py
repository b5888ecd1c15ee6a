"""Task types with concurrency and rate limits (TASKS_MODULES=tests.limited_tasks).

Each notes its start and end in the file at `path`, one line each ("id start|end time pid"),
so that the tests read the overlaps and the rate from what really ran, in any process.
"""

from __future__ import annotations

import asyncio
import os
import time

from tasks import Context, task


def note(path: str, task_id: str, what: str, key: str = "") -> None:
    with open(path, "a") as file:
        file.write(f"{task_id} {what} {time.time():.6f} {os.getpid()} {key}\n")


@task(concurrency=2)
async def capped(ctx: Context, path: str, seconds: float = 0.2) -> None:
    note(path, ctx.task_id, "start")
    await asyncio.sleep(seconds)
    note(path, ctx.task_id, "end")


@task(concurrency=1, limit_key="account")
async def per_account(ctx: Context, account: str, path: str, seconds: float = 0.1) -> None:
    note(path, ctx.task_id, "start", account)
    await asyncio.sleep(seconds)
    note(path, ctx.task_id, "end", account)


@task(rate_limit="5/s")
async def rated(ctx: Context, path: str) -> None:
    note(path, ctx.task_id, "start")
    note(path, ctx.task_id, "end")


@task(concurrency=1, process=True)
def capped_process(ctx: Context, path: str, seconds: float = 0.1) -> None:
    note(path, ctx.task_id, "start")
    time.sleep(seconds)
    note(path, ctx.task_id, "end")


@task
async def plain_note(ctx: Context, path: str) -> None:
    note(path, ctx.task_id, "start")
    note(path, ctx.task_id, "end")
