"""Many schedules made at runtime: idle CPU, how late ticks fire, poll latency, startup.

    python bench/schedules.py                          # 10,000 schedules, every 60 s
    python bench/schedules.py --schedules 2000 --seconds 30

Two `uvicorn main:app` servers on fresh SQLite files (synchronous=FULL, the default), one
after the other: a baseline with no runtime schedules, and one with --schedules made over
HTTP (`POST /schedules`, 8 clients; task `noop`, `every` 60 s). `every` ticks are aligned
to the epoch, so all of them tick at :00 of each minute, every run a real task that is
stored, claimed, run and finished. For each server:

- startup: from the process's start to its first `GET /health` answer (the schedules'
  server restarted with them all stored);
- idle CPU: the server process's utime + stime (/proc/PID/stat) over --seconds with no
  requests, so covering each :00 burst of ticks, as a share of one core;
- poll latency: GET /tasks/{id} of one task, one request every 20 ms over --seconds, so
  requests land everywhere in the minute, the bursts included;
- ticks: for every tick since the restart, its task's created_at (the row is made, then
  committed) and started_at minus the tick's time.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stats import percentile
from tests.harness import Server

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
POLL_EVERY = 0.02


@dataclass
class Result:
    label: str
    startup: float
    cpu: float  # share of one core
    poll_ms: list[float]
    late: list[float]  # seconds from each tick to its task's row
    started_late: list[float]  # ... to its start
    created_per_s: float | None = None


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def start(db: Path, tmp: Path) -> tuple[Server, float]:
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


def idle_cpu(server: Server, seconds: float) -> float:
    assert server.process is not None
    pid = server.process.pid
    before, began = cpu_seconds(pid), time.perf_counter()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.perf_counter() - began)


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


def tick_delays(db: Path, since: float) -> tuple[list[float], list[float]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        rows = conn.execute(
            "SELECT created_at - run_at, started_at - run_at FROM tasks "
            "WHERE unique_key LIKE 'tick:%' AND run_at >= ?",
            (since,),
        ).fetchall()
    conn.close()
    return [row[0] for row in rows], [row[1] for row in rows if row[1] is not None]


def run(label: str, tmp: Path, schedules: int, seconds: float) -> Result:
    db = tmp / f"{label}.db"
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
        cpu = idle_cpu(server, seconds)
        print(f"{label}: {cpu:.1%} of a core; measuring GET /tasks/{{id}}", file=sys.stderr)
        timings = poll(server, seconds)
        time.sleep(2)  # the last tick's runs finish
    finally:
        server.stop()
    late, started_late = tick_delays(db, since)
    return Result(label, startup, cpu, timings, late, started_late, created)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="schedules-bench-") as name:
        tmp = Path(name)
        results = [
            run("no schedules", tmp, 0, args.seconds),
            run(f"{args.schedules:,} schedules", tmp, args.schedules, args.seconds),
        ]
    base = results[0]
    print(
        f"\n{os.cpu_count()} cores; every schedule `every` 60 s (all tick at :00), task noop; "
        f"{args.seconds:g} s per measurement; SQLite, synchronous=FULL\n"
    )
    print(
        "| server | startup | idle CPU (one core) | GET /tasks/{id} p50 | p99 | p99 vs none "
        "| ticks | tick to row p50 | p99 | max | tick to start p99 |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        p99 = percentile(r.poll_ms, 0.99)
        ticks = (
            f"{len(r.late):,} | {percentile(r.late, 0.5):.2f} s | {percentile(r.late, 0.99):.2f} s "
            f"| {max(r.late):.2f} s | {percentile(r.started_late, 0.99):.2f} s"
            if r.late
            else "0 | - | - | - | -"
        )
        print(
            f"| {r.label} | {r.startup:.2f} s | {r.cpu:.1%} | {percentile(r.poll_ms, 0.5):.2f} ms "
            f"| {p99:.2f} ms | {p99 / percentile(base.poll_ms, 0.99):.2f}x | {ticks} |"
        )
    made = results[1].created_per_s
    if made:
        print(f"\nPOST /schedules from 8 clients: {made:,.0f} schedules/s")


if __name__ == "__main__":
    main()
