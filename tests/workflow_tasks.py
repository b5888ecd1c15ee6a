"""Task types that start tasks (TASKS_MODULES=tests.workflow_tasks). Children that write to
a file note each run there, so the tests count how often each child really ran."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from tasks import ChildFailed, Context, task


@task
async def double(ctx: Context, n: int) -> int:
    return n * 2


@task
async def count_run(ctx: Context, path: str, mark: str, seconds: float = 0.0) -> str:
    """Notes each run of it (mark and pid); a child whose re-runs the tests count."""
    with open(path, "a") as file:
        file.write(f"{mark} {os.getpid()}\n")
    await asyncio.sleep(seconds)
    return mark


@task
async def fan_out(ctx: Context, n: int) -> int:
    results = await ctx.map(double, [{"n": i} for i in range(n)])
    assert results == [i * 2 for i in range(n)]  # in order
    return sum(results)


@task
def sync_chain(ctx: Context, n: int) -> int:
    """Plain calls in a thread."""
    once = ctx.run("double", n=n)
    return int(ctx.run(double, n=once))


@task
async def catches_a_failure(ctx: Context) -> dict[str, Any]:
    try:
        await ctx.run("boom", message="child broke")
    except ChildFailed as failure:
        return {"status": failure.status, "error": failure.error, "text": str(failure)}
    return {}


@task
async def lets_a_failure_through(ctx: Context) -> None:
    await ctx.run("boom", message="child broke")


@task
async def runs_unknown(ctx: Context) -> None:
    await ctx.run("no_such_type")


@task
async def runs_bad_params(ctx: Context) -> None:
    await ctx.run(double, n="not a number")


@task
async def starts_and_returns(ctx: Context, path: str) -> str:
    child = await ctx.start(count_run, path=path, mark="started", seconds=0.2)
    return str(child)


@task(max_attempts=2)
async def retried_parent(ctx: Context, path: str) -> list[str]:
    """Its first attempt fails between two children: the retry must not re-run the first."""
    first = await ctx.run(count_run, path=path, mark="first")
    if ctx.attempt == 1:
        raise RuntimeError("the parent fails once, after its first child")
    second = await ctx.run(count_run, path=path, mark="second")
    return [first, second]


@task(max_attempts=2)
async def changes_its_calls(ctx: Context) -> int:
    result = await ctx.run(double, n=ctx.attempt)  # another call on the re-run
    if ctx.attempt == 1:
        raise RuntimeError("fail once")
    return int(result)


@task(max_attempts=2)
async def keyed_calls(ctx: Context, path: str) -> list[str]:
    """Calls named by key= may come in another order on a re-run."""
    marks = ["x", "y"] if ctx.attempt == 1 else ["y", "x"]
    done = [await ctx.run(count_run, key=mark, path=path, mark=mark) for mark in marks]
    if ctx.attempt == 1:
        raise RuntimeError("fail once")
    return done


@task
async def waits_on_a_hang(ctx: Context) -> None:
    await ctx.run("hang", seconds=3600)


@task
async def tree(ctx: Context, depth: int) -> int:
    if depth == 0:
        return 1
    return 1 + sum(await ctx.map(tree, [{"depth": depth - 1}] * 2))


@task
async def workflow_of_five(ctx: Context, path: str, seconds: float = 0.3) -> list[str]:
    """Five children one after another: a crash mid-way must not re-run the finished ones."""
    return [await ctx.run(count_run, path=path, mark=f"step{i}", seconds=seconds) for i in range(5)]


@task(process=True)
def process_parent(ctx: Context) -> None:
    ctx.run("double", n=1)


@task
async def file_parent(ctx: Context, path: str) -> str:
    Path(path).write_text("parent ran")
    return str(await ctx.run(double, n=3))


@task
async def spread(ctx: Context, path: str, n: int) -> int:
    """Children that take a while each, so that other processes take some: returns its pid."""
    await ctx.map(count_run, [{"path": path, "mark": f"c{i}", "seconds": 0.3} for i in range(n)])
    return os.getpid()


@task
async def workflow_of_five_named(ctx: Context, path: str, prefix: str, seconds: float) -> int:
    """workflow_of_five with marks of its own (prefix-step0...), for many parents at once."""
    for i in range(5):
        await ctx.run(count_run, path=path, mark=f"{prefix}-step{i}", seconds=seconds)
    return 5
