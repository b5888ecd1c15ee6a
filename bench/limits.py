"""Concurrency and rate limits under load: other types are not held up, limits are exact.

    python bench/limits.py                      # about a minute, SQLite (FULL)
    python bench/limits.py --keyed 10000 --keys 100 --samples 200

In-process (the app without HTTP, uvicorn's uvloop, synchronous=FULL):

1. Pickup of an unlimited no-op type (enqueue to its first line), p50 and p99: on an idle
   service, then while a `concurrency=1, limit_key="key"` type has `--keyed` tasks pending
   over `--keys` keys, each running `--seconds`. Also the most of the keyed type running
   at once, sampled while it drains (one per key: `--keys`).
2. A `rate_limit="100/s"` type, `--rated` tasks queued at once: starts in each of the first
   10 whole seconds (from the stored started_at), and the most in any 1 s window.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import bench_tasks
from bench.stats import percentile
from tasks_service import Settings, create_app
from tests.limits import most_in_window


def settings(db: str, concurrency: int) -> Settings:
    return Settings(
        db=db, modules=("bench.bench_tasks",), concurrency=concurrency, log_level="ERROR"
    )


async def pickups(service: Any, samples: int) -> list[float]:
    took = []
    for _ in range(samples):
        began = time.perf_counter()
        task = await service.enqueue("stamp")
        while task.id not in bench_tasks.started_at:
            await asyncio.sleep(0)
        took.append((bench_tasks.started_at.pop(task.id) - began) * 1000)
        await asyncio.sleep(0.005)
    return took


async def keyed_load(args: argparse.Namespace, db: str) -> tuple[list[float], list[float], int]:
    app = create_app(settings(db, concurrency=args.keys + 28))
    async with app.router.lifespan_context(app):
        service = app.state.service
        idle = await pickups(service, args.samples)
        for start in range(0, args.keyed, 1000):
            await asyncio.gather(
                *(
                    service.enqueue("one_per_key", key=i % args.keys, seconds=args.seconds)
                    for i in range(start, min(args.keyed, start + 1000))
                )
            )
        await asyncio.sleep(1)  # the keyed type at its limits
        most = 0

        async def sample_running() -> None:
            nonlocal most
            while True:
                counts = await service.store.running_counts()
                most = max(most, counts.get("one_per_key", 0))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample_running())
        loaded = await pickups(service, args.samples)
        sampler.cancel()
        return idle, loaded, most


async def rated_load(count: int, db: str) -> list[float]:
    app = create_app(settings(db, concurrency=8))
    async with app.router.lifespan_context(app):
        service = app.state.service
        await asyncio.gather(*(service.enqueue("hundred_per_second") for _ in range(count)))
        while await service.store.list(
            statuses=["pending", "running"], name=None, before_id=None, limit=1
        ):
            await asyncio.sleep(0.05)
        starts: list[float] = []
        cursor = None
        while True:
            page = await service.list(name="hundred_per_second", limit=500, cursor=cursor)
            starts.extend(
                datetime.fromisoformat(t.to_json()["started_at"]).timestamp() for t in page.items
            )
            cursor = page.next_cursor
            if cursor is None:
                return sorted(starts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keyed", type=int, default=10_000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=0.5)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--rated", type=int, default=1500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        idle, loaded, most = uvloop.run(keyed_load(args, f"{tmp}/keyed.db"))
        starts = uvloop.run(rated_load(args.rated, f"{tmp}/rated.db"))

    print(f"\nPickup of an unlimited type, {args.samples} samples (ms):\n")
    print("| service | p50 | p99 | p50 vs idle |")
    print("| --- | ---: | ---: | ---: |")
    base = percentile(idle, 0.5)
    for label, values in (
        ("idle", idle),
        (f"{args.keyed:,} keyed tasks pending over {args.keys} keys", loaded),
    ):
        p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
        print(f"| {label} | {p50:.2f} | {p99:.2f} | {p50 / base:.2f}x |")
    print(f"\nMost of the keyed type (concurrency=1 per key) running at once: {most}")

    first = int(starts[0])
    per_second = Counter(int(moment) - first for moment in starts)
    seconds = [per_second[i] for i in range(1, 11)]  # whole seconds after the first
    print('\nrate_limit="100/s", starts in each of 10 whole seconds:\n')
    print("| second | " + " | ".join(str(i) for i in range(1, 11)) + " |")
    print("| --- |" + " ---: |" * 10)
    print("| starts | " + " | ".join(str(n) for n in seconds) + " |")
    mean = sum(seconds) / len(seconds)
    print(
        f"\nmean {mean:.1f}/s ({mean / 100:.3f}x the limit); most in any 1 s window: "
        f"{most_in_window(starts, 1.0)}"
    )


if __name__ == "__main__":
    main()
