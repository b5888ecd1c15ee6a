"""Poll latency over HTTP: GET /tasks/{id} and first pages of GET /tasks, 1k vs 1M tasks stored.

    python bench/poll_latency.py                   # 1,000,000 tasks, 2,000 requests per endpoint
    python bench/poll_latency.py --tasks 200000 --requests 5000

Builds a store of 1,000 tasks (the baseline) and one of --tasks tasks with the store's own
schema (a SqliteStore opened once), loaded by plain sqlite3 in large transactions with
synchronous=OFF: several task types; mostly completed, some failed, cancelled, pending
(scheduled a day ahead, so nothing claims them) and running (owned by a worker row naming
this benchmark's own process, so the server sees a live owner and recovers nothing). Ids
come from models.new_id, so they sort by creation time. The load leaves the triggers
off and writes no change events; it puts them back afterwards.

For each store, `uvicorn main:app` serves the file and one keep-alive httpx.Client sends
requests one after another (so latency is not queueing) after a short warm-up: p50, p90 and
p99 of each endpoint, in milliseconds. The database is in the OS page cache (just written);
a cold cache is slower. GET /health (one trivial query) is the floor of the HTTP stack.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stats import percentile
from tasks_service.engines.sqlite import SqliteStore
from tasks_service.models import new_id
from tasks_service.runtime import liveness
from tasks_service.sql import COLUMNS
from tests.harness import Server

_COLUMN_COUNT = len(COLUMNS.split(","))
INSERT = f"INSERT INTO tasks ({COLUMNS}) VALUES ({', '.join('?' * _COLUMN_COUNT)})"
CHUNK = 50_000  # rows per transaction
SAMPLED_IDS = 5_000  # existing ids that GET /tasks/{id} picks from
# Task types: (name, share of tasks, params as ~100 bytes of JSON, result as ~50 bytes).
TYPES = [
    (
        "send_email",
        0.40,
        '{{"to":"user{n}@example.com","template":"welcome","locale":"en-GB","user_id":{n},"track":true}}',
        '{{"message_id":"<{n}.{r}@mail.example.com>","ok":true}}',
    ),
    (
        "resize_image",
        0.25,
        '{{"file":"img_{n}.jpg","width":1280,"height":720,"format":"webp","quality":{r},"crop":"center"}}',
        '{{"file":"img_{n}_1280.webp","bytes":{r}00}}',
    ),
    (
        "sync_account",
        0.15,
        '{{"account_id":{n},"provider":"crm","full":false,"dry_run":false,"since":"2024-05-{d:02d}T00:00:00Z"}}',
        '{{"created":{r},"updated":{d},"deleted":0}}',
    ),
    (
        "generate_report",
        0.10,
        '{{"report":"monthly-sales","month":"2024-{d:02d}","region":"emea","currency":"EUR","owner_id":{n}}}',
        '{{"pages":{d},"url":"/reports/{n}.pdf","rows":{r}}}',
    ),
    (
        "cleanup",
        0.10,
        '{{"bucket":"uploads","prefix":"tmp/{n}/","older_than_days":{d},"dry_run":false,"limit":5000}}',
        '{{"deleted":{r},"freed_bytes":{n}{r}}}',
    ),
]
STATUSES = [  # (status, share of tasks)
    ("completed", 0.925),
    ("failed", 0.04),
    ("cancelled", 0.02),
    ("pending", 0.013),
    ("running", 0.002),
]
REPORT_TYPE = "generate_report"  # the name filtered on in (e)


@dataclass
class Store:
    path: Path
    tasks: int
    sample_ids: list[str]
    middle_id: str
    load_seconds: float


def build(path: Path, tasks: int, worker_id: str) -> Store:
    """A task store of `tasks` rows, built with the store's own schema."""
    began = time.perf_counter()

    async def create_schema() -> None:
        store = SqliteStore(str(path))
        await store.open()
        await store.close()

    asyncio.run(create_schema())
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -262144")  # 256 MiB, for the load only
    triggers = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'tasks'"
    ).fetchall()
    for name, _ in triggers:
        db.execute(f"DROP TRIGGER {name}")
    pid = os.getpid()
    db.execute(
        "INSERT INTO workers (id, host, pid, pid_started, seen_at) VALUES (?, ?, ?, ?, ?)",
        (worker_id, liveness.this_host(), pid, liveness.process_started(pid), time.time()),
    )

    rng = random.Random(1)
    type_choices = rng.choices(TYPES, weights=[t[1] for t in TYPES], k=tasks)
    status_choices = rng.choices(
        [s for s, _ in STATUSES], weights=[w for _, w in STATUSES], k=tasks
    )
    sampled = set(rng.sample(range(tasks), min(SAMPLED_IDS, tasks)))
    sample_ids: list[str] = []
    middle_id = ""
    for start in range(0, tasks, CHUNK):
        rows = []
        for i in range(start, min(tasks, start + CHUNK)):
            task_id, created = new_id()
            name, _, params, result = type_choices[i]
            status = status_choices[i]
            n, r, d = rng.randrange(1, 10_000_000), rng.randrange(100, 100_000), i % 28 + 1
            took = rng.uniform(0.005, 3.0)
            row = [
                task_id, name, params.format(n=n, r=r, d=d), status,
                None, None, None, None,  # progress, message, result, error
                1, 1, 0, created, created, created, created + took, 0,
                None, None, worker_id, 0, 0,
            ]  # fmt: skip
            if status == "completed":
                row[4], row[6] = 100.0, result.format(n=n, r=r, d=d)
            elif status == "failed":
                row[7] = f"TimeoutError: upstream did not answer within 30 s (attempt {r % 3 + 1})"
                row[8] = row[9] = 3
            elif status == "cancelled":
                row[15] = 1
            elif status == "pending":  # scheduled for tomorrow: nothing claims it
                row[8], row[12], row[13], row[14], row[18] = 0, created + 86400, None, None, None
            else:  # running, in the worker row above (this process)
                row[14] = None
            row += [None] * (_COLUMN_COUNT - len(row))  # lane, parent_id, ...: none
            rows.append(row)
            if i in sampled:
                sample_ids.append(task_id)
            if i == tasks // 2:
                middle_id = task_id
        db.execute("BEGIN")
        db.executemany(INSERT, rows)
        db.execute("COMMIT")
    for _, sql in triggers:
        db.execute(sql)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    rng.shuffle(sample_ids)
    return Store(path, tasks, sample_ids, middle_id, time.perf_counter() - began)


def start_server(db: Path, data_dir: Path) -> Server:
    env = {"TASKS_DATA_DIR": str(data_dir), "TASKS_LOG_LEVEL": "WARNING"}
    server = Server(db=db, env=env, args=["--log-level", "warning", "--no-access-log"])
    return server.start(timeout=60)


def endpoints(store: Store) -> list[tuple[str, list[str]]]:
    """(label, paths to cycle through) for each measured request."""
    return [
        ("GET /health (floor)", ["/health"]),
        ("GET /tasks/{id}, random ids", [f"/tasks/{i}" for i in store.sample_ids]),
        ("GET /tasks?status=failed", ["/tasks?status=failed&limit=50"]),
        (
            "GET /tasks?status=failed&status=cancelled",
            ["/tasks?status=failed&status=cancelled&limit=50"],
        ),
        ("GET /tasks", ["/tasks?limit=50"]),
        (
            f"GET /tasks?name={REPORT_TYPE}&status=completed",
            [f"/tasks?name={REPORT_TYPE}&status=completed&limit=50"],
        ),
        (
            "GET /tasks?status=completed&cursor=(middle id)",
            [f"/tasks?status=completed&cursor={store.middle_id}&limit=50"],
        ),
    ]


def measure(
    client: httpx.Client, paths: list[str], requests: int, warmup: int
) -> tuple[list[float], int | None]:
    """Latencies in ms of `requests` sequential GETs after `warmup` unmeasured ones, and how
    many tasks a list page held (None: not a list)."""
    timings = []
    for i in range(warmup + requests):
        path = paths[i % len(paths)]
        began = time.perf_counter()
        response = client.get(path)
        took = (time.perf_counter() - began) * 1000
        if response.status_code != 200:
            raise SystemExit(f"GET {path}: {response.status_code} {response.text[:200]}")
        if i >= warmup:
            timings.append(took)
    if not paths[0].startswith("/tasks?"):
        return timings, None
    items = len(response.json()["items"])
    if not items:
        raise SystemExit(f"GET {paths[0]} returned no tasks: the benchmark measures nothing")
    return timings, items


def run(
    store: Store, tmp: Path, requests: int, warmup: int
) -> dict[str, tuple[list[float], int | None]]:
    server = start_server(store.path, tmp / "data")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            return {
                label: measure(client, paths, requests, warmup) for label, paths in endpoints(store)
            }
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--baseline", type=int, default=1_000, help="tasks in the small store")
    parser.add_argument("--requests", type=int, default=2_000, help="measured, per endpoint")
    parser.add_argument("--warmup", type=int, default=200, help="unmeasured, per endpoint")
    args = parser.parse_args()
    worker_id = f"{os.getpid()}-poll-latency-bench"

    results: dict[int, dict[str, tuple[list[float], int | None]]] = {}
    stores: dict[int, Store] = {}
    with tempfile.TemporaryDirectory(prefix="poll-latency-") as name:
        tmp = Path(name)
        for size in (args.baseline, args.tasks):
            store = build(tmp / f"tasks-{size}.db", size, worker_id)
            mb = store.path.stat().st_size / 1e6
            print(
                f"built {size:,} tasks in {store.load_seconds:.1f} s "
                f"({size / store.load_seconds:,.0f} rows/s, {mb:,.0f} MB)",
                file=sys.stderr,
            )
            stores[size] = store
            results[size] = run(store, tmp, args.requests, args.warmup)
            store.path.unlink()

    small, large = results[args.baseline], results[args.tasks]
    big = stores[args.tasks]
    print(
        f"\nSequential GETs over one keep-alive connection, {args.requests:,} per endpoint after "
        f"{args.warmup} warm-up; {os.cpu_count()} cores; limit=50; milliseconds\n"
    )
    shares = ", ".join(f"{status} {share:.1%}" for status, share in STATUSES)
    print(f"{big.tasks:,} tasks loaded in {big.load_seconds:.1f} s; {shares}\n")
    a, b = size_label(args.baseline), size_label(args.tasks)
    print(f"| endpoint | {a} p50 | {a} p99 | {b} p50 | {b} p99 | p50 {b} / {a} | tasks on page |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, (timings, items) in small.items():
        big_timings, big_items = large[label]
        s50, s99 = percentile(timings, 0.5), percentile(timings, 0.99)
        l50, l99 = percentile(big_timings, 0.5), percentile(big_timings, 0.99)
        page = "-" if items is None else f"{items} / {big_items}"
        print(
            f"| {label} | {s50:.2f} | {s99:.2f} | {l50:.2f} | {l99:.2f} | "
            f"{l50 / s50:.2f}x | {page} |"
        )
    print(f"\np90, milliseconds\n\n| endpoint | {a} p90 | {b} p90 |\n| --- | ---: | ---: |")
    for label, (timings, _) in small.items():
        big_p90 = percentile(large[label][0], 0.9)
        print(f"| {label} | {percentile(timings, 0.9):.2f} | {big_p90:.2f} |")


def size_label(tasks: int) -> str:
    for unit, scale in (("M", 1_000_000), ("k", 1000)):
        if tasks % scale == 0:
            return f"{tasks // scale:,}{unit}"
    return f"{tasks:,}"


if __name__ == "__main__":
    main()
