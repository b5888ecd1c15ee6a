"""End-to-end throughput over HTTP with 1 and N uvicorn workers, on one SQLite file.

    python bench/throughput.py                    # --workers 1 and 2, 5 s of load each
    python bench/throughput.py --workers 1 2 3 --seconds 10

For each worker count: start `uvicorn main:app --workers N` on a fresh database, POST no-op
tasks with wrk (Debian's `wrk` package) from 32 connections, wait until none is pending or
running, and print the rates. Every task is durable (synchronous=FULL) and really runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(
    workers: int, db: Path, extra_env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "TASKS_DB": str(db),
        "TASKS_MODULES": "bench.bench_tasks",
        "TASKS_LOG_LEVEL": "WARNING",
        "TASKS_CONCURRENCY": "64",
        **extra_env,
    }
    command = [sys.executable, "-m", "uvicorn", "main:app", "--port", str(port)]
    command += ["--workers", str(workers), "--log-level", "warning", "--no-access-log"]
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                time.sleep(1.0 if workers > 1 else 0.2)  # let every worker finish starting
                return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the server did not start")


WRK_POST = """
wrk.method = "POST"
wrk.body = '{"name": "%s"}'
wrk.headers["Content-Type"] = "application/json"
"""


def drive(url: str, db: Path, seconds: float, connections: int, name: str) -> dict[str, float]:
    """wrk POSTs tasks for `seconds`; then wait until every accepted task has run."""
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_POST % name)
    began = time.perf_counter()
    output = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "-s",
            script.name,
            f"{url}/tasks",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    posted = time.perf_counter() - began
    os.unlink(script.name)
    if "Non-2xx" in output:
        raise SystemExit(f"some POSTs failed:\n{output}")
    while True:
        total, unfinished = count(db)
        if unfinished == 0:
            break
        time.sleep(0.01)
    finished = time.perf_counter() - began
    return {
        "tasks": total,
        "submit_rate": total / posted,
        "end_to_end_rate": total / finished,
        "p50_ms": wrk_latency(output, "50%"),
        "p99_ms": wrk_latency(output, "99%"),
    }


def count(db: Path) -> tuple[int, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        total, unfinished = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status IN ('pending', 'running')) FROM tasks"
        ).fetchone()
    conn.close()
    return total, unfinished


def wrk_latency(output: str, percentile: str) -> float:
    """A latency percentile from `wrk --latency`, in milliseconds."""
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == percentile:
            value = parts[1]
            for unit, scale in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
                if value.endswith(unit):
                    return float(value[: -len(unit)]) * scale
    raise ValueError(f"no {percentile} latency in wrk output")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--task", default="noop", choices=["noop", "noop_sync"])
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    args = parser.parse_args()

    rows = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            env = {"TASKS_SQLITE_SYNCHRONOUS": args.synchronous}
            db = Path(tmp) / "bench.db"
            process, url = start_server(workers, db, env)
            try:
                result = drive(url, db, args.seconds, args.connections, args.task)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(60)
        rows.append((workers, result))

    base = rows[0][1]["end_to_end_rate"]
    print(
        f"\n`{args.task}` tasks POSTed by wrk for {args.seconds:g} s, {args.connections} "
        f"connections, synchronous={args.synchronous}, {os.cpu_count()} cores\n"
    )
    print("| workers | tasks | POST/s | tasks/s end to end | vs 1 worker | POST p50 | POST p99 |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for workers, r in rows:
        print(
            f"| {workers} | {r['tasks']:,.0f} | {r['submit_rate']:,.0f} | "
            f"{r['end_to_end_rate']:,.0f} | {r['end_to_end_rate'] / base:.2f}x | "
            f"{r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms |"
        )


if __name__ == "__main__":
    main()
