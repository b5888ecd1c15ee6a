"""The single POST /tasks path, measured in the ASGI app itself: what each request costs.

    python bench/hot_path.py                 # about 30 s
    python bench/hot_path.py --requests 5000 --rounds 5

No server and no client: requests are handed to the app object (`bench.app:app`, SQLite
FULL) as uvicorn would hand them, `--requests` at once, and the time per request is the
wall time over their number (the tasks they start run in the same process meanwhile). In one
run, alternating, median of `--rounds`: the bare FastAPI POST endpoint, POST /tasks through
FastAPI's router (the fast path taken out of this app), and POST /tasks as the service
serves it (tasks_service.web.fast_path). What uvicorn and the network add is the same for
all three, and is in bench/throughput.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BODY = b'{"name": "noop"}'


def scope(path: str) -> dict[str, Any]:
    headers = [(b"host", b"bench"), (b"content-type", b"application/json")]
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [*headers, (b"content-length", str(len(BODY)).encode())],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {},
    }  # fmt: skip


async def one(app: Any, path: str) -> int:
    given = False

    async def receive() -> dict[str, Any]:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.Event().wait()  # the client never goes away
        return {}

    status = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope(path), receive, send)
    return status


async def per_request(app: Any, path: str, count: int) -> float:
    began = time.perf_counter()
    statuses = await asyncio.gather(*(one(app, path) for _ in range(count)))
    took = time.perf_counter() - began
    assert set(statuses) <= {200, 202}, set(statuses)
    return took / count * 1e6


async def measure(requests: int, rounds: int) -> dict[str, list[float]]:
    os.environ.update(
        TASKS_DB=tempfile.mktemp(suffix=".db"),
        TASKS_MODULES="bench.bench_tasks",
        TASKS_LOG_LEVEL="ERROR",
        TASKS_CONCURRENCY="64",
    )
    from bench.app import app
    from tasks_service.app import create_app
    from tasks_service.web.fast_path import FastPath

    routed = create_app()  # the same service, with the fast path taken out
    routed.user_middleware = [m for m in routed.user_middleware if m.cls is not FastPath]
    variants = {
        "bare FastAPI POST endpoint": (app, "/bench/bare"),
        "POST /tasks through FastAPI's router": (routed, "/tasks"),
        "POST /tasks (the fast path)": (app, "/tasks"),
    }
    results: dict[str, list[float]] = {label: [] for label in variants}
    async with app.router.lifespan_context(app), routed.router.lifespan_context(routed):
        for target, path in variants.values():
            await per_request(target, path, 300)  # warm
        for _ in range(rounds):
            for label, (target, path) in variants.items():
                results[label].append(await per_request(target, path, requests))
                await asyncio.sleep(0.5)  # what they started has run
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results = uvloop.run(measure(args.requests, args.rounds))
    bare = statistics.median(results["bare FastAPI POST endpoint"])
    print(f"\n{args.requests:,} requests at once, median of {args.rounds} rounds, in one run:\n")
    print("| what | us per request | vs bare endpoint |")
    print("| --- | ---: | ---: |")
    for label, values in results.items():
        median = statistics.median(values)
        print(f"| {label} | {median:.0f} | {bare / median:.2f}x |")


if __name__ == "__main__":
    main()
