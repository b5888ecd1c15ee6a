"""Workflows: a fan-out of 10,000 children against 10,000 independent tasks, and a crash loop.

    python bench/workflows.py                       # about two minutes
    python bench/workflows.py --children 2000 --parents 20 --kills 5   # quick

1. In-process (the app without HTTP, uvloop, SQLite synchronous=FULL): one parent maps
   `--children` no-op children (`ctx.map`) and waits for them; beside it in the same run,
   as many independent no-op tasks enqueued at once. Children/s against tasks/s, and the
   process's resident memory while the parent waits (sampled every 50 ms) over before.
2. `uvicorn main:app` on one SQLite file, `--parents` parents of 5 children each run one
   after another (each child notes each of its runs in a file), SIGKILLed `--kills` times
   at random moments and started again on the same file. At the end: every parent
   completed, no child that had completed ran again because its parent did, and how many
   children ran twice because they were cut short themselves.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks import Context, task
from tasks_service import Settings, create_app
from tests.harness import Server, all_tasks

PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 2**20


@task
async def fan_out_noops(ctx: Context, n: int) -> int:
    results = await ctx.map("noop", [{}] * n)
    return len(results)


async def fan_out(children: int, db: str) -> tuple[float, float, float, float]:
    settings = Settings(db=db, modules=("bench.bench_tasks", "bench.workflows"), log_level="ERROR")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        service = app.state.service
        await asyncio.gather(*(service.enqueue("noop") for _ in range(500)))  # warm
        await drained(service)
        began = time.perf_counter()
        await asyncio.gather(*(service.enqueue("noop") for _ in range(children)))
        await drained(service)
        independent = children / (time.perf_counter() - began)

        before = resident_mb()
        most = before
        began = time.perf_counter()
        parent = await service.enqueue("fan_out_noops", n=children)
        while (await service.get(parent.id)).status.value in ("pending", "running"):
            most = max(most, resident_mb())
            await asyncio.sleep(0.05)
        took = time.perf_counter() - began
        assert (await service.get(parent.id)).result == children
        return independent, children / took, before, most


async def drained(service: Any) -> None:
    while await service.store.list(
        statuses=["pending", "running"], name=None, before_id=None, limit=1
    ):
        await asyncio.sleep(0.01)


def crash_loop(parents: int, kills: int, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        runs = work / "runs"
        env = {
            "TASKS_MODULES": "tests.workflow_tasks,tests.sample_tasks",
            "TASKS_LOG_LEVEL": "WARNING",
        }
        server = Server(db=work / "tasks.db", log_path=work / "server.log", env=env).start()
        ids = []
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for number in range(parents):
                params = {"path": str(runs), "seconds": 0.1, "prefix": f"p{number}"}
                body = {"name": "workflow_of_five_named", "params": params}
                ids.append(client.post("/tasks", json=body).json()["id"])
        runs_when_done: dict[str, int] = {}  # a completed child's runs when it was seen done
        for _ in range(kills):
            time.sleep(rng.uniform(0.5, 2.0))
            done = completed_children(server.url)
            seen = run_counts(runs)  # read after: a completed child's runs are all noted
            for mark in done:
                runs_when_done.setdefault(mark, seen[mark])
            server.kill()
            server.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            tasks = {t["id"]: t for t in all_tasks(server.url)}
            if all(tasks[i]["status"] == "completed" for i in ids):
                break
            time.sleep(0.5)
        tasks = {t["id"]: t for t in all_tasks(server.url)}
        server.stop()
        counts = run_counts(runs)
    children = [t for t in tasks.values() if t["name"] == "count_run"]
    return {
        "parents": parents,
        "parents completed": sum(tasks[i]["status"] == "completed" for i in ids),
        "children": len(children),
        "completed children run again": sum(
            counts[mark] > runs for mark, runs in runs_when_done.items()
        ),
        "children run twice, cut short themselves": sum(n > 1 for n in counts.values()),
    }


def run_counts(path: Path) -> collections.Counter[str]:
    lines = path.read_text().splitlines() if path.exists() else []
    return collections.Counter(line.split()[0] for line in lines)


def completed_children(url: str) -> set[str]:
    """The marks of the children completed so far (read just before a kill)."""
    return {
        t["params"]["mark"]
        for t in all_tasks(url)
        if t["name"] == "count_run" and t["status"] == "completed"
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument("--parents", type=int, default=40)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        independent, fanned, before, most = uvloop.run(fan_out(args.children, f"{tmp}/f.db"))
    print(f"\nFan-out, {args.children:,} no-op children of one parent (in-process, FULL):\n")
    print("| what | tasks/s |")
    print("| --- | ---: |")
    print(f"| {args.children:,} independent tasks | {independent:,.0f} |")
    print(f"| {args.children:,} children of one parent (ctx.map) | {fanned:,.0f} |")
    print(
        f"\nchildren/s vs independent: {fanned / independent:.2f}x; resident memory "
        f"{before:.0f} MB before, at most {most:.0f} MB while the parent waited "
        f"(+{most - before:.1f} MB)"
    )
    result = crash_loop(args.parents, args.kills, args.seed)
    print(f"\nCrash loop: {args.parents} parents of 5 children, {args.kills} SIGKILLs:\n")
    print("| what | count |")
    print("| --- | ---: |")
    for label, value in result.items():
        print(f"| {label} | {value} |")


if __name__ == "__main__":
    main()
