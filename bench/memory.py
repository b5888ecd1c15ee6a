"""Memory: RSS flat from 10k to 100k completed tasks; no per-task state kept after a task ends.

    python bench/memory.py                        # 100,000 no-op tasks in waves of 10,000
    python bench/memory.py --tasks 300000 --wave 20000 --burst 10000

Runs the service in this process (create_app, concurrency=64, synchronous=FULL) and enqueues
no-op tasks through the Python API a wave at a time (--burst enqueues in flight at once),
waiting until none is pending or running. After each wave, and a moment for the tasks that
awaited the last commit to return, it records the process's resident size (VmRSS), the
attempts the runner still holds, its busy slots, the asyncio tasks alive, the objects the
garbage collector tracks after a collection, and every object CPython holds, containers or
not (sys.getallocatedblocks): per-task state would show in those last columns.

The row before the first wave is the started service, for reference; the first wave's
growth is warm-up (code paths, allocator arenas), so the claim is about the waves after it.
Some growth after it is expected and bounded: each SQLite connection's page cache (2 MB by
default, the writer's and the reader's) fills as the file grows. A whole wave enqueued at
once (--burst 10000) makes RSS creep by about 1 MB per few tens of thousands of tasks while
the Python blocks stay flat: CPython's small-object allocator keeps 1 MiB arenas that the
burst's peak filled and a few long-lived objects still pin. That is the burst, not the
service keeping anything.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tasks_service import create_app
from tasks_service.config import Settings

FLAT_MB = 10.0  # "flat": RSS growth from the first wave to the last within this


@dataclass
class Sample:
    completed: int
    rss_mb: float
    attempts: int
    busy: int
    asyncio_tasks: int
    gc_objects: int
    py_blocks: int  # every object CPython has allocated, gc-tracked or not
    seconds: float  # how long the wave took


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("needs /proc/self/status (Linux)")


async def waves(total: int, wave: int, burst: int, settle: float) -> list[Sample]:
    with tempfile.TemporaryDirectory(prefix="memory-bench-") as tmp:
        settings = Settings(
            db=f"{tmp}/bench.db",
            modules=("bench.bench_tasks",),
            log_level="WARNING",
            concurrency=64,
            data_dir=Path(tmp) / "data",
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            service = app.state.service
            runner = service.runner

            def sample(completed: int, seconds: float) -> Sample:
                gc.collect()
                return Sample(
                    completed=completed,
                    rss_mb=rss_mb(),
                    attempts=len(runner._attempts),
                    busy=runner._busy,
                    py_blocks=sys.getallocatedblocks(),
                    asyncio_tasks=len(asyncio.all_tasks()),
                    gc_objects=len(gc.get_objects()),
                    seconds=seconds,
                )

            samples = [sample(0, 0.0)]
            completed = 0
            while completed < total:
                count = min(wave, total - completed)
                began = time.perf_counter()
                for sent in range(0, count, burst):
                    await asyncio.gather(
                        *(service.enqueue("noop") for _ in range(min(burst, count - sent)))
                    )
                while await service.store.list(
                    statuses=["pending", "running"], name=None, before_id=None, limit=1
                ):
                    await asyncio.sleep(0.005)
                seconds = time.perf_counter() - began
                completed += count
                await asyncio.sleep(settle)  # the tasks awaiting the last commit return
                samples.append(sample(completed, seconds))
            return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--wave", type=int, default=10_000)
    parser.add_argument(
        "--burst", type=int, default=1_000, help="enqueues in flight at once, within a wave"
    )
    parser.add_argument(
        "--settle", type=float, default=0.2, help="seconds after a wave, before measuring"
    )
    args = parser.parse_args()
    if args.tasks < 2 * args.wave:
        parser.error("--tasks must be at least two waves")

    samples = asyncio.run(waves(args.tasks, args.wave, args.burst, args.settle))
    first, last = samples[1], samples[-1]
    print(
        f"\nIn-process service, concurrency=64, `noop` tasks in waves of {args.wave:,} "
        f"({args.burst:,} enqueues in flight at once), each run to the end; measured "
        f"{args.settle:g} s after each wave, after gc.collect()\n"
    )
    since = f"{first.completed // 1000:,}k" if first.completed % 1000 == 0 else first.completed
    print(
        f"| completed tasks | RSS MB | change since {since} | "
        "attempts held | busy slots | asyncio tasks | gc objects | Python blocks | wave tasks/s |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for previous, s in zip([None, *samples], samples, strict=False):
        change = "-" if s.completed < first.completed else f"{s.rss_mb - first.rss_mb:+.1f}"
        rate = "- (started)"
        if previous is not None:
            rate = f"{(s.completed - previous.completed) / s.seconds:,.0f}"
        print(
            f"| {s.completed:,} | {s.rss_mb:.1f} | {change} | {s.attempts} | {s.busy} | "
            f"{s.asyncio_tasks} | {s.gc_objects:,} | {s.py_blocks:,} | {rate} |"
        )
    growth = last.rss_mb - first.rss_mb
    middle = samples[len(samples) // 2]
    verdict = "within" if growth <= FLAT_MB else "NOT within"
    print(
        f"\nRSS growth from {first.completed:,} to {last.completed:,} completed tasks: "
        f"{growth:+.1f} MB, {verdict} {FLAT_MB:g} MB "
        f"(from {middle.completed:,} to {last.completed:,}: {last.rss_mb - middle.rss_mb:+.1f} MB)."
    )
    held = last.attempts or last.busy
    print(
        f"Per-task state after the last wave: {last.attempts} attempts held, {last.busy} busy "
        f"slots, {last.asyncio_tasks - samples[0].asyncio_tasks:+d} asyncio tasks, "
        f"{last.gc_objects - first.gc_objects:+,} gc objects and "
        f"{last.py_blocks - first.py_blocks:+,} Python blocks since {first.completed:,}"
        + (" (attempts or slots still held!)" if held else ".")
    )


if __name__ == "__main__":
    main()
