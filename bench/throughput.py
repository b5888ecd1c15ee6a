"""End-to-end throughput over HTTP with 1 and N uvicorn workers, on one SQLite file.

    python bench/throughput.py                    # --workers 1 and 2, 5 s of load each
    python bench/throughput.py --workers 1 2 3 --seconds 10

Starts `uvicorn bench.app:app` (the service plus baseline routes) on a fresh database. First
the baselines in that same server: a bare FastAPI POST endpoint, and FastAPI's
BackgroundTasks running a no-op (keeping nothing). Then, for each worker count, no-op tasks
POSTed to /tasks with wrk (Debian's `wrk` package) from 32 connections; it waits until none
is pending or running. Every task is durable (synchronous=FULL) and really runs.
"""

from __future__ import annotations

import argparse
import json
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
    command = [sys.executable, "-m", "uvicorn", "bench.app:app", "--port", str(port)]
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
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk(url: str, body: str, seconds: float, connections: int) -> dict[str, float]:
    """POST `body` to `url` with wrk; requests made, their rate and latency percentiles."""
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_POST % body)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    output = subprocess.run(
        [*command, "-s", script.name, url], capture_output=True, text=True, check=True
    ).stdout
    os.unlink(script.name)
    if "Non-2xx" in output:
        raise SystemExit(f"some requests failed:\n{output}")
    requests = next(int(line.split()[0]) for line in output.splitlines() if "requests in" in line)
    return {
        "requests": requests,
        "rate": requests / seconds,
        "p50_ms": wrk_latency(output, "50%"),
        "p99_ms": wrk_latency(output, "99%"),
    }


def drive(url: str, db: Path, seconds: float, connections: int, name: str) -> dict[str, float]:
    """wrk POSTs tasks for `seconds`; then wait until every accepted task has run."""
    began = time.perf_counter()
    result = wrk(f"{url}/tasks", json.dumps({"name": name}), seconds, connections)
    while True:
        total, unfinished = count(db)
        if unfinished == 0:
            break
        time.sleep(0.01)
    result["tasks"] = total
    result["end_to_end_rate"] = total / (time.perf_counter() - began)
    return result


def baselines(url: str, seconds: float, connections: int) -> dict[str, dict[str, float]]:
    """The bare endpoint and BackgroundTasks, in the same uvicorn as POST /tasks."""
    bare = wrk(f"{url}/bench/bare", '{"name": "noop"}', seconds, connections)
    began = time.perf_counter()
    background = wrk(f"{url}/bench/background", '{"name": "noop"}', seconds, connections)
    while httpx.get(f"{url}/bench/background").json()["runs"] < background["requests"]:
        time.sleep(0.01)
    background["end_to_end_rate"] = background["requests"] / (time.perf_counter() - began)
    return {"bare": bare, "background": background}


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
    base: dict[str, dict[str, float]] = {}
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            env = {"TASKS_SQLITE_SYNCHRONOUS": args.synchronous}
            db = Path(tmp) / "bench.db"
            process, url = start_server(workers, db, env)
            try:
                if not base:
                    base = baselines(url, args.seconds, args.connections)
                result = drive(url, db, args.seconds, args.connections, args.task)
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(60)
        rows.append((workers, result))

    bare, background = base["bare"], base["background"]
    one = rows[0][1]["end_to_end_rate"]
    print(
        f"\nPOSTs by wrk for {args.seconds:g} s each, {args.connections} connections, "
        f"`{args.task}` tasks, synchronous={args.synchronous}, {os.cpu_count()} cores\n"
    )
    print("| what | durable | requests/s | tasks/s end to end | p50 | p99 |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    print(
        f"| bare FastAPI POST endpoint | - | {bare['rate']:,.0f} | - | "
        f"{bare['p50_ms']:.1f} ms | {bare['p99_ms']:.1f} ms |"
    )
    print(
        f"| FastAPI BackgroundTasks | no | {background['rate']:,.0f} | "
        f"{background['end_to_end_rate']:,.0f} | {background['p50_ms']:.1f} ms | "
        f"{background['p99_ms']:.1f} ms |"
    )
    for workers, r in rows:
        print(
            f"| POST /tasks, {workers} worker{'s' if workers > 1 else ''} | yes | "
            f"{r['rate']:,.0f} | {r['end_to_end_rate']:,.0f} | {r['p50_ms']:.1f} ms | "
            f"{r['p99_ms']:.1f} ms |"
        )
    print("\nRatios (targets: POST/s >= 0.8x bare; end to end >= 1x BackgroundTasks;")
    print("2 workers >= 1.5x one)\n")
    print(f"- POST /tasks vs bare endpoint: {rows[0][1]['rate'] / bare['rate']:.2f}x")
    print(f"- end to end vs BackgroundTasks: {one / background['end_to_end_rate']:.2f}x")
    for workers, r in rows[1:]:
        print(f"- {workers} workers vs 1: {r['end_to_end_rate'] / one:.2f}x")


if __name__ == "__main__":
    main()
