"""In-process speed: the Python API end to end, against baselines measured in the same run.

    python bench/inprocess.py               # 20,000 no-op tasks per run, median of 3
    python bench/inprocess.py --tasks 50000 --runs 5

Prints throughput (enqueue N no-op tasks at once, wait until all have run), pickup latency
(enqueue on an idle service to the task's first line) and cancel latency (request to
`cancelled` stored), with synchronous=FULL and NORMAL, beside bare asyncio.create_task, a
create_task with one aiosqlite commit per state change, and raw SQLite commit rates.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import aiosqlite

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bench_tasks
from config import Settings
from main import create_app
from models import TaskStatus

BASE = Settings(modules=("bench.bench_tasks",), concurrency=64, log_level="WARNING")


async def service_throughput(tasks: int, synchronous: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        settings = replace(BASE, db=f"{tmp}/bench.db", sqlite_synchronous=synchronous)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            service = app.state.service
            began = time.perf_counter()
            await asyncio.gather(*(service.enqueue("noop") for _ in range(tasks)))
            while await service.store.list(
                statuses=["pending", "running"], name=None, before_id=None, limit=1
            ):
                await asyncio.sleep(0.002)
            return tasks / (time.perf_counter() - began)


async def bare_create_task(tasks: int) -> float:
    async def noop() -> None:
        pass

    began = time.perf_counter()
    await asyncio.gather(*(asyncio.create_task(noop()) for _ in range(tasks)))
    return tasks / (time.perf_counter() - began)


async def commit_per_change(tasks: int, synchronous: str = "NORMAL") -> float:
    """The naive durable design: a row per task, one commit per state change."""
    with tempfile.TemporaryDirectory() as tmp:
        async with aiosqlite.connect(f"{tmp}/naive.db") as db:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute(f"PRAGMA synchronous = {synchronous}")
            await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, status TEXT)")
            await db.commit()

            async def one(i: int) -> None:
                await db.execute("INSERT INTO t VALUES (?, 'pending')", (i,))
                await db.commit()
                await db.execute("UPDATE t SET status = 'running' WHERE id = ?", (i,))
                await db.commit()
                await db.execute("UPDATE t SET status = 'completed' WHERE id = ?", (i,))
                await db.commit()

            began = time.perf_counter()
            await asyncio.gather(*(asyncio.create_task(one(i)) for i in range(tasks)))
            return tasks / (time.perf_counter() - began)


def raw_commits(synchronous: str, count: int = 5000) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(f"{tmp}/raw.db", isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute(f"PRAGMA synchronous = {synchronous}")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        began = time.perf_counter()
        for i in range(count):
            db.execute("INSERT INTO t VALUES (?, 'x')", (i,))
        rate = count / (time.perf_counter() - began)
        db.close()
        return rate


async def aiosqlite_commits(synchronous: str, count: int = 3000) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        async with aiosqlite.connect(f"{tmp}/a.db", isolation_level=None) as db:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute(f"PRAGMA synchronous = {synchronous}")
            await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            began = time.perf_counter()
            for i in range(count):
                await db.execute("INSERT INTO t VALUES (?, 'x')", (i,))
            return count / (time.perf_counter() - began)


def batched_rows(count: int = 200_000, batch: int = 500) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        db = sqlite3.connect(f"{tmp}/b.db", isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        began = time.perf_counter()
        for start in range(0, count, batch):
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO t VALUES (?, 'x')", ((i,) for i in range(start, start + batch))
            )
            db.execute("COMMIT")
        rate = count / (time.perf_counter() - began)
        db.close()
        return rate


async def latencies(synchronous: str, samples: int) -> tuple[list[float], list[float]]:
    """Pickup (enqueue to first line) and cancel (request to stored) latencies, in ms."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = replace(BASE, db=f"{tmp}/lat.db", sqlite_synchronous=synchronous)
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            service = app.state.service
            pickups = []
            for _ in range(samples):
                began = time.perf_counter()
                task = await service.enqueue("stamp")
                while task.id not in bench_tasks.started_at:
                    await asyncio.sleep(0)
                pickups.append((bench_tasks.started_at.pop(task.id) - began) * 1000)
                await asyncio.sleep(0.002)  # idle again
            cancels = []
            for _ in range(max(10, samples // 10)):
                task = await service.enqueue("wait_forever")
                while (await service.get(task.id)).status is not TaskStatus.RUNNING:
                    await asyncio.sleep(0.001)
                began = time.perf_counter()
                await service.cancel(task.id)
                while (await service.get(task.id)).status is not TaskStatus.CANCELLED:
                    await asyncio.sleep(0)
                cancels.append((time.perf_counter() - began) * 1000)
            return pickups, cancels


def median_of(runs: int, measure) -> float:  # type: ignore[no-untyped-def]
    return statistics.median(measure() for _ in range(runs))


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    n, runs = args.tasks, args.runs

    rows = [
        (
            "bare asyncio.create_task, no-op",
            "no",
            median_of(runs, lambda: asyncio.run(bare_create_task(n))),
        ),
        (
            "create_task + one aiosqlite commit per change (NORMAL)",
            "yes",
            median_of(runs, lambda: asyncio.run(commit_per_change(min(n, 5000)))),
        ),
        (
            "create_task + one aiosqlite commit per change (FULL)",
            "yes",
            median_of(runs, lambda: asyncio.run(commit_per_change(min(n, 2000), "FULL"))),
        ),
        (
            "this service, synchronous=NORMAL",
            "yes*",
            median_of(runs, lambda: asyncio.run(service_throughput(n, "NORMAL"))),
        ),
        (
            "this service, synchronous=FULL",
            "yes",
            median_of(runs, lambda: asyncio.run(service_throughput(n, "FULL"))),
        ),
    ]
    print(f"\nThroughput: {n:,} no-op tasks enqueued at once, run to the end; median of {runs}\n")
    print("| what | durable | tasks/s | vs create_task + commit per change |")
    print("| --- | --- | ---: | ---: |")
    naive = rows[1][2]
    for what, durable, rate in rows:
        print(f"| {what} | {durable} | {rate:,.0f} | {rate / naive:.1f}x |")
    print("\n(* NORMAL survives a killed process; a power loss may take back the last commits.)")

    print("\nSQLite on this machine (WAL)\n")
    print("| what | per second |")
    print("| --- | ---: |")
    print(f"| sqlite3, one-row commits, FULL | {raw_commits('FULL'):,.0f} |")
    print(f"| sqlite3, one-row commits, NORMAL | {raw_commits('NORMAL'):,.0f} |")
    print(f"| aiosqlite, one-row commits, FULL | {asyncio.run(aiosqlite_commits('FULL')):,.0f} |")
    print(
        f"| aiosqlite, one-row commits, NORMAL | {asyncio.run(aiosqlite_commits('NORMAL')):,.0f} |"
    )
    print(f"| sqlite3, 500 rows per transaction, FULL (rows) | {batched_rows():,.0f} |")

    print(f"\nLatency on an idle service, {args.samples} samples, milliseconds\n")
    print("| what | synchronous | p50 | p90 | p99 |")
    print("| --- | --- | ---: | ---: | ---: |")
    for synchronous in ("FULL", "NORMAL"):
        pickups, cancels = asyncio.run(latencies(synchronous, args.samples))
        for what, values in (
            ("pickup: enqueue to first line", pickups),
            ("cancel: request to stored", cancels),
        ):
            print(
                f"| {what} | {synchronous} | {percentile(values, 0.5):.2f} | "
                f"{percentile(values, 0.9):.2f} | {percentile(values, 0.99):.2f} |"
            )


if __name__ == "__main__":
    main()
