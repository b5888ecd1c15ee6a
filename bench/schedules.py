"""Many schedules made at runtime: idle CPU, how late ticks fire, poll latency, startup.

    python bench/schedules.py                          # 10,000 schedules, every 60 s, both stores
    python bench/schedules.py --schedules 2000 --seconds 30 --stores sqlite

For each store, two `uvicorn main:app` servers on a fresh database (SQLite with
synchronous=FULL, the default; PostgreSQL 15 with fsync and synchronous_commit on, on the same
disk), one after the other: a baseline with no runtime schedules, and one with --schedules
made over HTTP (`POST /schedules`, 8 clients; task `noop`, `every` 60 s). `every` ticks are
aligned to the epoch, so all of them tick at :00 of each minute, every run a real task that
is stored, claimed, run and finished. For each server:

- startup: from the process's start to its first `GET /health` answer (the schedules'
  server restarted with them all stored);
- idle CPU: the server process's utime + stime (/proc/PID/stat) over --seconds with no
  requests, so covering each :00 burst of ticks, as a share of one core (and PostgreSQL's
  own processes', apart);
- poll latency: GET /tasks/{id} of one task, one request every 20 ms over --seconds, so
  requests land everywhere in the minute, the bursts included;
- ticks: for every tick since the restart, its task's created_at (the row is made, then
  committed) and started_at minus the tick's time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stats import percentile
from tests.harness import Server
from tests.postgres import PostgresServer

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POLL_EVERY = 0.02
TICKS_SQL = (
    "SELECT created_at - run_at, started_at - run_at FROM tasks "
    "WHERE unique_key LIKE 'tick:%' AND run_at >= {}"
)


@dataclass
class Result:
    label: str
    store: str
    startup: float
    cpu: float  # share of one core
    database_cpu: float | None  # PostgreSQL's processes, share of one core
    poll_ms: list[float]
    late: list[float]  # seconds from each tick to its task's row
    started_late: list[float]  # ... to its start
    created_per_s: float | None = None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def family_cpu(parent: int) -> dict[int, float]:
    """CPU seconds of a process and of each of its children, by pid."""
    found = {parent: cpu_seconds(parent)}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == parent:
                    found[int(entry.name)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return found


def start(db: str, tmp: Path) -> tuple[Server, float]:
    env = {
        "TASKS_MODULES": "bench.bench_tasks",
        "TASKS_DATA_DIR": str(tmp / "data"),
        "TASKS_LOG_LEVEL": "WARNING",
    }
    server = Server(db=db, env=env, args=["--log-level", "warning", "--no-access-log"])
    began = time.perf_counter()
    server.start(timeout=120)
    return server, time.perf_counter() - began


def create_schedules(server: Server, count: int) -> float:
    """POST `count` schedules from 8 clients; schedules per second."""

    def post_range(part: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for i in range(part, count, 8):
                body = {"id": f"user-{i}:reminder", "task": "noop", "every": 60}
                response = client.post("/schedules", json=body)
                if response.status_code != 201:
                    raise SystemExit(f"POST /schedules: {response.status_code} {response.text}")

    began = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(post_range, range(8)))
    return count / (time.perf_counter() - began)


def idle_cpu(
    server: Server, seconds: float, postgres: PostgresServer | None
) -> tuple[float, float | None]:
    """Shares of one core the server (and PostgreSQL) used over `seconds` of no requests."""
    assert server.process is not None
    pid = server.process.pid
    postmaster = postgres.process.pid if postgres and postgres.process else None
    before, began = cpu_seconds(pid), time.perf_counter()
    database_before = family_cpu(postmaster) if postmaster else {}
    time.sleep(seconds)
    took = time.perf_counter() - began
    cpu = (cpu_seconds(pid) - before) / took
    if postmaster is None:
        return cpu, None
    after = family_cpu(postmaster)
    used = sum(value - database_before.get(p, 0.0) for p, value in after.items())
    return cpu, used / took


def poll(server: Server, seconds: float) -> list[float]:
    """GET /tasks/{id} of one task every POLL_EVERY s; latencies in ms."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        task = client.post("/tasks", json={"name": "noop"}).json()
        path = f"/tasks/{task['id']}"
        for _ in range(50):  # warm-up
            client.get(path)
        timings = []
        deadline = time.monotonic() + seconds
        next_at = time.monotonic()
        while time.monotonic() < deadline:
            began = time.perf_counter()
            response = client.get(path)
            timings.append((time.perf_counter() - began) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"GET {path}: {response.status_code}")
            next_at += POLL_EVERY
            time.sleep(max(0.0, next_at - time.monotonic()))
    return timings


def tick_delays(db: str, since: float) -> tuple[list[float], list[float]]:
    """(tick to row, tick to start) of every tick's task since `since`, in seconds."""
    if db.startswith("postgresql://"):

        async def read() -> list[tuple[float, float | None]]:
            conn = await asyncpg.connect(db)
            try:
                return [tuple(r) for r in await conn.fetch(TICKS_SQL.format("$1"), since)]
            finally:
                await conn.close()

        rows = asyncio.run(read())
    else:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
            rows = conn.execute(TICKS_SQL.format("?"), (since,)).fetchall()
        conn.close()
    return [row[0] for row in rows], [row[1] for row in rows if row[1] is not None]


def run(
    label: str,
    store: str,
    database: Callable[[str], str],
    tmp: Path,
    schedules: int,
    seconds: float,
    postgres: PostgresServer | None,
) -> Result:
    db = database(f"{store}_{schedules}")
    server, startup = start(db, tmp)
    created = None
    try:
        if schedules:
            created = create_schedules(server, schedules)
            print(f"{label}: {schedules:,} schedules made, {created:,.0f}/s", file=sys.stderr)
            server.stop()
            server, startup = start(db, tmp)
        since = time.time()
        print(f"{label}: started in {startup:.2f} s; measuring idle CPU", file=sys.stderr)
        cpu, database_cpu = idle_cpu(server, seconds, postgres)
        print(f"{label}: {cpu:.1%} of a core; measuring GET /tasks/{{id}}", file=sys.stderr)
        timings = poll(server, seconds)
        time.sleep(2)  # the last tick's runs finish
    finally:
        server.stop()
    late, started_late = tick_delays(db, since)
    return Result(label, store, startup, cpu, database_cpu, timings, late, started_late, created)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="per measurement")
    parser.add_argument(
        "--stores", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"]
    )
    args = parser.parse_args()
    results: list[Result] = []
    with (
        tempfile.TemporaryDirectory(prefix="schedules-bench-") as name,
        contextlib.ExitStack() as stack,
    ):
        tmp = Path(name)
        for store in args.stores:
            postgres = None
            if store == "postgres":
                postgres = stack.enter_context(PostgresServer(tmp / "postgres", durable=True))

                def database(name: str, server: PostgresServer = postgres) -> str:
                    server.create_database(name)
                    return server.url(name)
            else:

                def database(name: str) -> str:
                    return str(tmp / f"{name}.db")

            for count in (0, args.schedules):
                label = f"{count:,} schedules" if count else "no schedules"
                results.append(run(label, store, database, tmp, count, args.seconds, postgres))
    print(
        f"\n{os.cpu_count()} cores; every schedule `every` 60 s (all tick at :00), task noop; "
        f"{args.seconds:g} s per measurement; durable commits\n"
    )
    print(
        "| store | server | startup | idle CPU (one core) | GET /tasks/{id} p50 | p99 "
        "| p99 vs none | ticks | tick to row p50 | p99 | max | tick to start p99 |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    baselines = {r.store: r for r in results if r.label == "no schedules"}
    for r in results:
        p99 = percentile(r.poll_ms, 0.99)
        base = percentile(baselines[r.store].poll_ms, 0.99)
        cpu = f"{r.cpu:.1%}" + (
            "" if r.database_cpu is None else f" (+ {r.database_cpu:.1%} PostgreSQL)"
        )
        ticks = (
            f"{len(r.late):,} | {percentile(r.late, 0.5):.2f} s | {percentile(r.late, 0.99):.2f} s "
            f"| {max(r.late):.2f} s | {percentile(r.started_late, 0.99):.2f} s"
            if r.late
            else "0 | - | - | - | -"
        )
        print(
            f"| {r.store} | {r.label} | {r.startup:.2f} s | {cpu} "
            f"| {percentile(r.poll_ms, 0.5):.2f} ms | {p99:.2f} ms | {p99 / base:.2f}x | {ticks} |"
        )
    for r in results:
        if r.created_per_s:
            print(
                f"\n{r.store}: POST /schedules from 8 clients, {r.created_per_s:,.0f} schedules/s"
            )


if __name__ == "__main__":
    main()
