"""GET /stats latency at 1,000,000 tasks with a full day of per-minute counts, on both stores.

    python bench/glance.py                           # SQLite and PostgreSQL, 1,000,000 tasks
    python bench/glance.py --stores sqlite --requests 500

Each store gets the tasks of poll_latency.py's mix (--tasks of them, five types, mostly
completed), and the per-minute rows the service would have written had those tasks ended
over the last 24 hours: per minute and type, each attempt's outcome (completed, failed,
cancelled, plus 3% of attempts retried) and duration bucket, each type's durations drawn
from a log-normal of its own (a median from 50 ms to 30 s), spread over several shards as
processes write them (--shards; PostgreSQL keeps one row set per process), and one queue
depth sample per minute. The rows are written with plain SQL in large transactions.

Then `uvicorn main:app` serves the store, and one keep-alive httpx.Client sends requests one
after another (latency, not queueing): the first GET /stats?minutes=1440 after the start
(it reads the whole day; each process keeps the minutes that can no longer change), then
--requests of each window after a warm-up, p50, p90 and p99 in milliseconds: a day's
window first --spacing apart (100 s by default, so minutes become final meanwhile and the
day's sums are worked out again), then back to back. GET /health is
the floor of the HTTP stack. PostgreSQL is a private server (tests/postgres.py, durable).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import poll_latency
from bench.stats import percentile
from tasks_service.counted import NO_DURATION, duration_bucket
from tasks_service.engines.postgres import PostgresStore
from tasks_service.runtime.stats import KEPT_MINUTES, MINUTE, minute_of
from tests.harness import Server
from tests.postgres import PostgresServer

# (type, median seconds, spread: sigma of log(seconds)), in poll_latency's TYPES order.
DURATIONS = {
    "send_email": (0.3, 0.6),
    "resize_image": (1.2, 0.5),
    "sync_account": (5.0, 1.0),
    "generate_report": (30.0, 0.8),
    "cleanup": (0.05, 1.2),
}
RETRIED_SHARE = 0.03
UNSTARTED_CANCEL_SHARE = 0.5  # of the cancelled: cancelled while pending (no duration)
StatsRow = tuple[int, str, str, int, str, int]


def stats_rows(tasks: int, shards: int, now: float) -> Iterator[StatsRow]:
    """(minute, name, outcome, bucket, shard, n) of a day in which `tasks` tasks ended."""
    rng = random.Random(21)
    last = minute_of(now)
    first = last - (KEPT_MINUTES - 1) * MINUTE
    per_minute = tasks / KEPT_MINUTES
    statuses = [s for s, _ in poll_latency.STATUSES if s in ("completed", "failed", "cancelled")]
    weights = [w for s, w in poll_latency.STATUSES if s in statuses]
    names = [t[0] for t in poll_latency.TYPES]
    shares = [t[1] for t in poll_latency.TYPES]
    for minute in range(first, last + MINUTE, MINUTE):
        counts: dict[tuple[str, str, int, str], int] = {}
        ended = int(rng.gauss(per_minute, math.sqrt(per_minute)))
        for name, outcome in zip(
            rng.choices(names, shares, k=ended),
            rng.choices(statuses, weights, k=ended),
            strict=True,
        ):
            median, sigma = DURATIONS[name]
            seconds = rng.lognormvariate(math.log(median), sigma)
            bucket = duration_bucket(seconds)
            if outcome == "cancelled" and rng.random() < UNSTARTED_CANCEL_SHARE:
                bucket = NO_DURATION
            shard = f"tasks-{rng.randrange(shards)}"
            counts[(name, outcome, bucket, shard)] = (
                counts.get((name, outcome, bucket, shard), 0) + 1
            )
            if rng.random() < RETRIED_SHARE:
                key = (name, "retried", duration_bucket(seconds * rng.random()), shard)
                counts[key] = counts.get(key, 0) + 1
        for (name, outcome, bucket, shard), n in counts.items():
            yield minute, name, outcome, bucket, shard, n


def depth_rows(now: float) -> list[tuple[int, int, float]]:
    rng = random.Random(5)
    last = minute_of(now)
    return [
        (m, rng.randrange(0, 40), m + 55.0)
        for m in range(last - (KEPT_MINUTES - 1) * MINUTE, last, MINUTE)
    ]


def load_sqlite(path: Path, tasks: int, shards: int) -> int:
    poll_latency.build(path, tasks, "glance-bench-worker")
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    rows = list(stats_rows(tasks, shards, time.time()))
    db.executemany(
        "INSERT INTO stats_minutes (minute, name, outcome, bucket, shard, n) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.executemany(
        "INSERT INTO stats_depth (minute, depth, sampled_at) VALUES (?, ?, ?)",
        depth_rows(time.time()),
    )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    return len(rows)


async def load_postgres(url: str, tasks: int, shards: int) -> int:
    store = PostgresStore(url)
    await store.open()  # the schema
    await store.close()
    conn = await asyncpg.connect(url)
    try:
        now = time.time()
        await conn.execute(
            "INSERT INTO tasks (id, name, params, status, attempts, max_attempts, priority, "
            "created_at, run_at, started_at, finished_at, result) "
            "SELECT lpad(i::text, 26, '0'), (ARRAY['send_email', 'resize_image', "
            "'sync_account', 'generate_report', 'cleanup'])[1 + i % 5], "
            '\'{"to": "user\' || i || \'@example.com", "template": "welcome"}\', '
            "CASE WHEN i % 100 < 92 THEN 'completed' WHEN i % 100 < 96 THEN 'failed' "
            "ELSE 'cancelled' END, 1, 1, 0, $1 - i * 0.0864, $1 - i * 0.0864, "
            "$1 - i * 0.0864, $1 - i * 0.0864 + 0.5, '{\"ok\": true}' "
            "FROM generate_series(1, $2) AS i",
            now,
            tasks,
        )
        rows = list(stats_rows(tasks, shards, now))
        await conn.copy_records_to_table(
            "stats_minutes",
            records=rows,
            columns=["minute", "name", "outcome", "bucket", "shard", "n"],
        )
        await conn.copy_records_to_table(
            "stats_depth", records=depth_rows(now), columns=["minute", "depth", "sampled_at"]
        )
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return len(rows)


def measure(
    client: httpx.Client, path: str, requests: int, warmup: int, spacing: float = 0.0
) -> list[float]:
    """Latencies in ms of `requests` GETs after `warmup` unmeasured ones, `spacing` s apart."""
    timings = []
    for i in range(warmup + requests):
        time.sleep(spacing)
        began = time.perf_counter()
        response = client.get(path)
        took = (time.perf_counter() - began) * 1000
        if response.status_code != 200:
            raise SystemExit(f"GET {path}: {response.status_code} {response.text[:200]}")
        if i >= warmup:
            timings.append(took)
    return timings


def run(
    db: Path | str, tmp: Path, tasks: int, requests: int, warmup: int, spacing: float
) -> dict[str, list[float]]:
    env = {"TASKS_DATA_DIR": str(tmp / "data"), "TASKS_LOG_LEVEL": "WARNING"}
    server = Server(db=db, env=env, args=["--log-level", "warning", "--no-access-log"])
    server.start(timeout=120)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            results: dict[str, list[float]] = {}
            results["GET /stats?minutes=1440, first after start"] = measure(
                client, "/stats?minutes=1440", 1, 0
            )
            body = client.get("/stats?minutes=1440").json()
            ended = sum(
                item["completed"] + item["failed"] + item["cancelled"] for item in body["series"]
            )
            if ended < 0.9 * tasks:  # a day of counts must be there
                raise SystemExit("GET /stats found no counts: the benchmark measures nothing")
            # A day's window, over more than a minute: as minutes become final, each
            # process keeps them and works the day's sums out again, once a minute.
            results[f"GET /stats?minutes=1440, {spacing:g} s apart"] = measure(
                client, "/stats?minutes=1440", requests, warmup, spacing
            )
            for label, path in (
                ("GET /stats?minutes=1440", "/stats?minutes=1440"),
                ("GET /stats?minutes=60", "/stats?minutes=60"),
                ("GET /stats?minutes=1", "/stats?minutes=1"),
                ("GET /health (floor)", "/health"),
            ):
                results[label] = measure(client, path, requests, warmup)
            results["tasks counted in the day"] = [float(ended)]
            return results
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=4, help="processes that wrote the day")
    parser.add_argument("--requests", type=int, default=1_000, help="measured, per endpoint")
    parser.add_argument("--warmup", type=int, default=50, help="unmeasured, per endpoint")
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument(
        "--spacing", type=float, default=0.1, help="seconds between the first window's GETs"
    )
    args = parser.parse_args()

    tables: dict[str, tuple[int, dict[str, list[float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="glance-") as name, ExitStack() as stack:
        tmp = Path(name)
        for store in args.stores:
            began = time.perf_counter()
            db: Path | str
            if store == "sqlite":
                db = tmp / "tasks.db"
                rows = load_sqlite(db, args.tasks, args.shards)
            else:
                postgres = stack.enter_context(PostgresServer(tmp / "postgres", durable=True))
                postgres.create_database("glance")
                db = postgres.url("glance")
                rows = asyncio.run(load_postgres(db, args.tasks, args.shards))
            print(
                f"{store}: {args.tasks:,} tasks and {rows:,} per-minute rows loaded in "
                f"{time.perf_counter() - began:.1f} s",
                file=sys.stderr,
            )
            tables[store] = (
                rows,
                run(db, tmp, args.tasks, args.requests, args.warmup, args.spacing),
            )

    print(
        f"\nSequential GETs over one keep-alive connection, {args.requests:,} per endpoint after "
        f"{args.warmup} warm-up; {args.tasks:,} tasks; a day of per-minute rows from "
        f"{args.shards} processes; milliseconds\n"
    )
    print("| store | endpoint | p50 | p90 | p99 |")
    print("| --- | --- | ---: | ---: | ---: |")
    for store, (_, results) in tables.items():
        label = {"sqlite": "SQLite", "postgres": "PostgreSQL"}.get(store, store)
        for endpoint, timings in results.items():
            if endpoint == "tasks counted in the day":
                continue
            if len(timings) == 1:
                print(f"| {label} | {endpoint} | {timings[0]:.1f} | | |")
                continue
            p50, p90, p99 = (percentile(timings, q) for q in (0.5, 0.9, 0.99))
            print(f"| {label} | {endpoint} | {p50:.2f} | {p90:.2f} | {p99:.2f} |")
    for store, (rows, results) in tables.items():
        counted = int(results["tasks counted in the day"][0])
        print(
            f"\n{store}: {rows:,} per-minute rows; GET /stats?minutes=1440 counted {counted:,} ends"
        )


if __name__ == "__main__":
    main()
