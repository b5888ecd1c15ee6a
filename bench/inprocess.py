"""In-process speed: the Python API end to end, against baselines measured in the same run.

    python bench/inprocess.py               # 20,000 no-op tasks per run, median of 3
    python bench/inprocess.py --tasks 50000 --runs 5
    python bench/inprocess.py --stores sqlite   # without PostgreSQL

Prints throughput (enqueue N no-op tasks at once, wait until all have run), pickup latency
(enqueue on an idle service to the task's first line) and cancel latency (request to
`cancelled` stored), on SQLite with synchronous=FULL and NORMAL and on PostgreSQL, beside bare
asyncio.create_task, a create_task with one aiosqlite (or asyncpg) commit per state change,
and raw SQLite and PostgreSQL commit rates. PostgreSQL is a private server this script starts
(tests/postgres.py with durable=True: fsync, full_page_writes and synchronous_commit on, as
in production), a fresh database per run, on the same disk as SQLite's files.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path

import aiosqlite
import asyncpg
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bench_tasks
from bench.stats import percentile
from tasks_service import create_app
from tasks_service.config import Settings
from tasks_service.models import TaskStatus
from tests.postgres import PostgresServer

BASE = Settings(modules=("bench.bench_tasks",), concurrency=64, log_level="WARNING")
POSTGRES = "postgres"  # in place of a `synchronous` level: the store on PostgreSQL

# The durable PostgreSQL server of this run, once started; a fresh database per use.
postgres_server: PostgresServer | None = None
_database_numbers = itertools.count()


@contextmanager
def database(synchronous: str) -> Iterator[Settings]:
    """Settings for a fresh store: a SQLite file at `synchronous`, or a PostgreSQL database."""
    if synchronous != POSTGRES:
        with tempfile.TemporaryDirectory() as tmp:
            yield replace(BASE, db=f"{tmp}/bench.db", sqlite_synchronous=synchronous)
        return
    with fresh_postgres() as url:
        yield replace(BASE, db=url)


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """The URL of a new, empty database on this run's PostgreSQL server; dropped after."""
    assert postgres_server is not None, "PostgreSQL was not started (--stores)"
    name = f"bench{next(_database_numbers)}"
    postgres_server.create_database(name)
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)


async def service_throughput(tasks: int, synchronous: str) -> float:
    with database(synchronous) as settings:
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


async def without_gc(measure: Awaitable[float]) -> float:
    """How fast without the cyclic garbage collector: what its passes over the many
    objects of 20,000 waiting enqueues cost (the service never turns it off)."""
    gc.disable()
    try:
        return await measure
    finally:
        gc.enable()


async def bare_create_task(tasks: int) -> float:
    async def noop() -> None:
        pass

    began = time.perf_counter()
    await asyncio.gather(*(asyncio.create_task(noop()) for _ in range(tasks)))
    return tasks / (time.perf_counter() - began)


async def commit_per_change(
    tasks: int, synchronous: str = "NORMAL", *, each_alone: bool = True
) -> float:
    """The naive durable design: a row per task, one commit per state change.

    `each_alone`: every change is its own transaction, as the design means. Without it the
    tasks share one connection unguarded, so a commit also commits whatever other tasks
    wrote since the last one: their commits are grouped by accident.
    """
    with tempfile.TemporaryDirectory() as tmp:
        async with aiosqlite.connect(f"{tmp}/naive.db") as db:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute(f"PRAGMA synchronous = {synchronous}")
            await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, status TEXT)")
            await db.commit()
            alone = asyncio.Lock() if each_alone else contextlib.nullcontext()

            async def change(sql: str, i: int) -> None:
                async with alone:
                    await db.execute(sql, (i,))
                    await db.commit()

            async def one(i: int) -> None:
                await change("INSERT INTO t VALUES (?, 'pending')", i)
                await change("UPDATE t SET status = 'running' WHERE id = ?", i)
                await change("UPDATE t SET status = 'completed' WHERE id = ?", i)

            began = time.perf_counter()
            await asyncio.gather(*(asyncio.create_task(one(i)) for i in range(tasks)))
            return tasks / (time.perf_counter() - began)


async def commit_per_change_postgres(tasks: int) -> float:
    """The same naive design on PostgreSQL: each task its own pooled connection's commits."""
    with fresh_postgres() as url:
        async with asyncpg.create_pool(url, min_size=10, max_size=10) as pool:
            await pool.execute("CREATE TABLE t (id integer PRIMARY KEY, status text)")

            async def one(i: int) -> None:
                async with pool.acquire() as conn:
                    await conn.execute("INSERT INTO t VALUES ($1, 'pending')", i)
                    await conn.execute("UPDATE t SET status = 'running' WHERE id = $1", i)
                    await conn.execute("UPDATE t SET status = 'completed' WHERE id = $1", i)

            began = time.perf_counter()
            await asyncio.gather(*(asyncio.create_task(one(i)) for i in range(tasks)))
            return tasks / (time.perf_counter() - began)


async def postgres_commits(count: int = 2000, connections: int = 1, batch: int = 1) -> float:
    """Rows committed per second by `connections` asyncpg connections at once, `batch` rows
    per transaction."""
    with fresh_postgres() as url:
        async with asyncpg.create_pool(url, min_size=connections, max_size=connections) as pool:
            await pool.execute("CREATE TABLE t (id integer PRIMARY KEY, v text)")
            ids = iter(range(count))

            async def insert() -> None:
                async with pool.acquire() as conn:
                    while rows := [(i, "x") for i in itertools.islice(ids, batch)]:
                        if batch == 1:
                            await conn.execute("INSERT INTO t VALUES ($1, $2)", *rows[0])
                        else:
                            async with conn.transaction():
                                await conn.executemany("INSERT INTO t VALUES ($1, $2)", rows)

            began = time.perf_counter()
            await asyncio.gather(*(insert() for _ in range(connections)))
            return count / (time.perf_counter() - began)


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
    with database(synchronous) as settings:
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


def main() -> None:
    global postgres_server
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument(
        "--loop",
        default="uvloop",
        choices=["uvloop", "asyncio"],
        help="uvloop is what `uvicorn main:app` runs on (it is installed with the service)",
    )
    parser.add_argument(
        "--stores", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"]
    )
    args = parser.parse_args()
    with ExitStack() as stack:
        if "postgres" in args.stores:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            postgres_server = stack.enter_context(PostgresServer(tmp, durable=True))
        report(args)


def report(args: argparse.Namespace) -> None:
    n, runs = args.tasks, args.runs
    run = uvloop.run if args.loop == "uvloop" else asyncio.run
    sqlite, postgres = "sqlite" in args.stores, "postgres" in args.stores

    rows = [
        (
            "bare asyncio.create_task, no-op",
            "no",
            median_of(runs, lambda: run(bare_create_task(n))),
        ),
        (
            "create_task + one aiosqlite commit per change (NORMAL)",
            "yes",
            median_of(runs, lambda: run(commit_per_change(min(n, 5000)))),
        ),
        (
            "create_task + one aiosqlite commit per change (FULL)",
            "yes",
            median_of(runs, lambda: run(commit_per_change(min(n, 2000), "FULL"))),
        ),
        (
            "the same, one shared connection unguarded: commits grouped by accident (NORMAL)",
            "yes",
            median_of(runs, lambda: run(commit_per_change(min(n, 5000), each_alone=False))),
        ),
    ]
    if postgres:
        rows.append(
            (
                "create_task + one asyncpg commit per change (PostgreSQL, 10 connections)",
                "yes",
                median_of(runs, lambda: run(commit_per_change_postgres(min(n, 2000)))),
            )
        )
    if sqlite:
        rows += [
            (
                "this service, SQLite, synchronous=FULL, cyclic GC paused (diagnostic)",
                "yes",
                median_of(runs, lambda: run(without_gc(service_throughput(n, "FULL")))),
            ),
            (
                "this service, SQLite, synchronous=NORMAL",
                "yes*",
                median_of(runs, lambda: run(service_throughput(n, "NORMAL"))),
            ),
            (
                "this service, SQLite, synchronous=FULL",
                "yes",
                median_of(runs, lambda: run(service_throughput(n, "FULL"))),
            ),
        ]
    if postgres:
        rows.append(
            (
                "this service, PostgreSQL",
                "yes",
                median_of(runs, lambda: run(service_throughput(n, POSTGRES))),
            )
        )
    print(
        f"\nThroughput: {n:,} no-op tasks enqueued at once, run to the end; median of {runs}; "
        f"event loop: {args.loop}\n"
    )
    print("| what | durable | tasks/s | vs create_task + commit per change |")
    print("| --- | --- | ---: | ---: |")
    naive = rows[1][2]
    for what, durable, rate in rows:
        print(f"| {what} | {durable} | {rate:,.0f} | {rate / naive:.1f}x |")
    print("\n(* NORMAL survives a killed process; a power loss may take back the last commits.)")
    if postgres:
        print("(PostgreSQL: fsync, full_page_writes and synchronous_commit on.)")

    print("\nSQLite on this machine (WAL)\n")
    print("| what | per second |")
    print("| --- | ---: |")
    print(f"| sqlite3, one-row commits, FULL | {raw_commits('FULL'):,.0f} |")
    print(f"| sqlite3, one-row commits, NORMAL | {raw_commits('NORMAL'):,.0f} |")
    print(f"| aiosqlite, one-row commits, FULL | {run(aiosqlite_commits('FULL')):,.0f} |")
    print(f"| aiosqlite, one-row commits, NORMAL | {run(aiosqlite_commits('NORMAL')):,.0f} |")
    print(f"| sqlite3, 500 rows per transaction, FULL (rows) | {batched_rows():,.0f} |")

    if postgres:
        print("\nPostgreSQL on this machine (fsync and synchronous_commit on)\n")
        print("| what | per second |")
        print("| --- | ---: |")
        one = run(postgres_commits())
        print(f"| asyncpg, one-row commits, 1 connection | {one:,.0f} |")
        ten = run(postgres_commits(5000, connections=10))
        print(f"| asyncpg, one-row commits, 10 connections at once | {ten:,.0f} |")
        batched = run(postgres_commits(200_000, batch=500))
        print(f"| asyncpg, 500 rows per transaction (rows) | {batched:,.0f} |")

    stores = [("SQLite, FULL", "FULL"), ("SQLite, NORMAL", "NORMAL")] if sqlite else []
    if postgres:
        stores.append(("PostgreSQL", POSTGRES))
    print(f"\nLatency on an idle service, {args.samples} samples, milliseconds\n")
    print("| what | store | p50 | p90 | p99 |")
    print("| --- | --- | ---: | ---: | ---: |")
    for store, synchronous in stores:
        pickups, cancels = run(latencies(synchronous, args.samples))
        for what, values in (
            ("pickup: enqueue to first line", pickups),
            ("cancel: request to stored", cancels),
        ):
            print(
                f"| {what} | {store} | {percentile(values, 0.5):.2f} | "
                f"{percentile(values, 0.9):.2f} | {percentile(values, 0.99):.2f} |"
            )


if __name__ == "__main__":
    main()
