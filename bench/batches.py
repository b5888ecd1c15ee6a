"""Many tasks in one request: POST /tasks/batch against single POST /tasks, and its memory.

    python bench/batches.py                 # about a minute
    python bench/batches.py --seconds 10 --batch 500

One `uvicorn bench.app:app` (SQLite, synchronous=FULL) on a fresh database per row, driven
by `wrk` (Debian's package) from `--connections` connections for `--seconds`:

1. single no-op POST /tasks, then POST /tasks/batch of `--batch` no-op tasks: tasks
   accepted and stored per second while wrk runs, and end to end (until every task has run
   and its end is recorded), with the ratio of the two rows;
2. memory: the server's resident memory before, at the peak of one 1,000-item batch, and
   after 100 such batches (all run to the end).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.throughput import UNFINISHED, Database, start_server, wrk
from tests.harness import stop_all

PAGE_KB = 4


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_KB / 1024


def row(
    url: str, db: Database, path: str, body: str, seconds: float, per: int, conns: int
) -> dict[str, float]:
    began = time.perf_counter()
    result = wrk([f"{url}{path}"], body, seconds, conns)
    stored = result["requests"] * per / seconds
    while db.count(UNFINISHED):
        time.sleep(0.01)
    tasks = db.count("SELECT count(*) FROM tasks")
    return {
        "requests": result["rate"],
        "stored": stored,
        "end_to_end": tasks / (time.perf_counter() - began),
        "p50": result["p50_ms"],
        "p99": result["p99_ms"],
    }


def memory(batches: int, size: int, tmp: Path) -> tuple[float, float, float]:
    db = Database("sqlite", tmp, None, "memory")
    server = start_server(1, db.url, {})
    try:
        assert server.process is not None
        pid = server.process.pid
        body = {"tasks": [{"name": "noop"}] * size}
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for _ in range(3):  # warm
                client.post("/tasks/batch", json=body)
            while db.count(UNFINISHED):
                time.sleep(0.05)
            before = resident_mb(pid)
            peak = before
            done = threading.Event()

            def sample() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, resident_mb(pid))
                    time.sleep(0.002)

            sampler = threading.Thread(target=sample)
            sampler.start()
            client.post("/tasks/batch", json=body)
            while db.count(UNFINISHED):
                time.sleep(0.01)
            done.set()
            sampler.join()
            for _ in range(batches):
                assert client.post("/tasks/batch", json=body).status_code == 202
                while db.count(UNFINISHED):
                    time.sleep(0.01)
            after = resident_mb(pid)
        return before, peak, after
    finally:
        stop_all([server], timeout=30)
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--batch-connections", type=int, default=4)
    args = parser.parse_args()
    single = json.dumps({"name": "noop"})
    many = json.dumps({"tasks": [{"name": "noop"}] * args.batch})
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, path, body, per, conns in (
            ("POST /tasks", "/tasks", single, 1, args.connections),
            (
                f"POST /tasks/batch of {args.batch}",
                "/tasks/batch",
                many,
                args.batch,
                args.batch_connections,
            ),
        ):
            db = Database("sqlite", Path(tmp), None, label.split()[1].replace("/", "_"))
            server = start_server(1, db.url, {})
            try:
                rows[label] = row(server.url, db, path, body, args.seconds, per, conns)
            finally:
                stop_all([server], timeout=60)
                db.close()
        before, peak, after = memory(100, 1000, Path(tmp))

    print(f"\nSQLite FULL, {args.seconds:g} s of wrk per row:\n")
    print("| what | connections | requests/s | tasks/s stored | tasks/s end to end | p50 | p99 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for (label, r), conns in zip(
        rows.items(), (args.connections, args.batch_connections), strict=True
    ):
        print(
            f"| {label} | {conns} | {r['requests']:,.0f} | {r['stored']:,.0f} | "
            f"{r['end_to_end']:,.0f} | {r['p50']:.1f} ms | {r['p99']:.1f} ms |"
        )
    first, second = rows.values()
    print(
        f"\nbatches vs single POSTs, stored: {second['stored'] / first['stored']:.1f}x; "
        f"end to end: {second['end_to_end'] / first['end_to_end']:.1f}x"
    )
    print(
        f"\nmemory of the server: {before:.1f} MB before, {peak:.1f} MB at the peak of one "
        f"1,000-item batch (+{peak - before:.1f} MB), {after:.1f} MB after 100 more "
        f"({after - before:+.1f} MB)"
    )


if __name__ == "__main__":
    main()
