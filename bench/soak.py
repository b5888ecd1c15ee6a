"""Soak: a steady mix of tasks for minutes; server memory, descriptors and database stay flat.

    python bench/soak.py                          # 10 minutes at 50 tasks/s
    python bench/soak.py --minutes 1 --rate 100

Starts `uvicorn main:app` (TASKS_MODULES=tests.sample_tasks, a short TASKS_RESULT_TTL) on a
fresh database and POSTs tasks at a steady rate over HTTP, in a repeating mix out of every
20: 14 `echo` (short), 2 `sleep` of 1 to 4 s (slow, with progress), 2 `boom` (failing) and
2 `sleep` of 30 s cancelled about 0.3 s after they were accepted (POST /tasks/{id}/cancel).
The built-in `purge_tasks` schedule only fires hourly, so it is run every --purge-every
seconds through POST /schedules/purge_tasks/run and deletes what finished more than the TTL
ago. The client is one asyncio loop with a few keep-alive connections, light enough not to
starve the server on 2 cores (its own CPU use is printed at the end).

Every --sample-every seconds (and at the end) a row: elapsed time, tasks submitted, the
server's resident memory (VmRSS from /proc/<pid>/status), its open file descriptors
(/proc/<pid>/fd), the database file plus its -wal, the tasks in the store (the `tasks`
gauges of GET /metrics, taken just before a purge, so at their highest), and the slowest
POST /tasks of the interval. Changes are against the first row, taken right after startup.

Flat means: from the reference row (the first taken once the store has reached its steady
size, TTL + purge period into the run, which is also past warm-up) to the end, RSS grows by
at most 10 MB, open descriptors by at most 10 and the database (+ -wal) by at most 10 % +
1 MB; and the store never holds more than 1.25 x rate x (TTL + purge period) + 200 tasks,
i.e. the purge bounds it. With short runs the TTL and the purge period are shortened (see
--ttl) so that a reference row exists. After the load, once every task finished, the tasks
finished by type and status (counters of GET /metrics) must match what was sent: every
`echo` and slow `sleep` completed, every `boom` failed, every cancelled `sleep` cancelled.

Exits non-zero if something did not stay flat, a request failed (no answer or a 5xx), or the
outcomes do not match.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import os
import random
import re
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import SAMPLE_MODULES, Server

MIX = ["echo"] * 14 + ["sleep"] * 2 + ["boom"] * 2 + ["cancel"] * 2
FLAT_RSS_MB = 10.0
FLAT_FDS = 10
FLAT_DB_SHARE, FLAT_DB_MB = 0.10, 1.0


@dataclass
class Sample:
    elapsed: float
    submitted: int
    rss_mb: float
    fds: int
    db_mb: float
    tasks: int
    post_max_ms: float


@dataclass
class Load:
    """What the client sent and what came back."""

    sent: collections.Counter[str] = field(default_factory=collections.Counter)  # by kind
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    post_max_ms: float = 0.0  # slowest POST /tasks since the last sample
    in_flight: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def submitted(self) -> int:
        return sum(self.sent.values())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("needs /proc/<pid>/status (Linux)")


def db_mb(db: Path) -> float:
    paths = (db, Path(f"{db}-wal"))
    return sum(p.stat().st_size for p in paths if p.exists()) / 1024 / 1024


def metric_values(text: str, metric: str) -> dict[str, float]:
    """`{labels: value}` of one metric in Prometheus text."""
    values = {}
    for line in text.splitlines():
        if line.startswith(metric + "{"):
            labels, value = line[len(metric) :].rsplit(" ", 1)
            values[labels] = float(value)
    return values


async def submit(http: httpx.AsyncClient, kind: str, load: Load, rng: random.Random) -> None:
    body: dict[str, Any]
    if kind == "echo":
        body = {"name": "echo", "params": {"text": f"soak {load.submitted}"}}
    elif kind == "sleep":
        body = {"name": "sleep", "params": {"seconds": round(rng.uniform(1, 4), 2), "steps": 4}}
    elif kind == "boom":
        body = {"name": "boom", "params": {"message": "soak failure"}}
    else:
        body = {"name": "sleep", "params": {"seconds": 30, "steps": 30}}
    load.sent[kind] += 1
    began = time.perf_counter()
    try:
        response = await http.post("/tasks", json=body)
    except httpx.HTTPError as exc:
        load.failures[f"POST /tasks: {type(exc).__name__}"] += 1
        return
    load.post_max_ms = max(load.post_max_ms, (time.perf_counter() - began) * 1000)
    if response.status_code != 202:
        load.failures[f"POST /tasks: {response.status_code}"] += 1
        return
    if kind != "cancel":
        return
    await asyncio.sleep(0.3)
    try:
        response = await http.post(f"/tasks/{response.json()['id']}/cancel")
    except httpx.HTTPError as exc:
        load.failures[f"cancel: {type(exc).__name__}"] += 1
        return
    load.answers[f"cancel {response.status_code}"] += 1
    if response.status_code not in (200, 202):
        load.failures[f"cancel: {response.status_code} {response.text[:80]}"] += 1


async def purge(http: httpx.AsyncClient, load: Load) -> None:
    try:
        response = await http.post("/schedules/purge_tasks/run")
    except httpx.HTTPError as exc:
        load.failures[f"purge: {type(exc).__name__}"] += 1
        return
    load.answers[f"purge {response.status_code}"] += 1
    if response.status_code != 202:
        load.failures[f"purge: {response.status_code}"] += 1


async def sample(http: httpx.AsyncClient, pid: int, db: Path, load: Load, began: float) -> Sample:
    text = (await http.get("/metrics")).text
    row = Sample(
        elapsed=time.monotonic() - began,
        submitted=load.submitted,
        rss_mb=rss_mb(pid),
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        db_mb=db_mb(db),
        tasks=round(sum(metric_values(text, "tasks").values())),
        post_max_ms=load.post_max_ms,
    )
    load.post_max_ms = 0.0
    return row


def print_row(row: Sample, first: Sample) -> None:
    print(
        f"| {row.elapsed:5.0f} s | {row.submitted:,} | {row.rss_mb:.1f} "
        f"({row.rss_mb - first.rss_mb:+.1f}) | {row.fds} ({row.fds - first.fds:+d}) | "
        f"{row.db_mb:.2f} ({row.db_mb - first.db_mb:+.2f}) | {row.tasks:,} "
        f"({row.tasks - first.tasks:+,}) | {row.post_max_ms:.0f} ms |",
        flush=True,
    )


async def soak(
    url: str,
    pid: int,
    db: Path,
    *,
    seconds: float,
    rate: float,
    sample_every: float,
    purge_every: float,
    connections: int,
) -> tuple[list[Sample], Load]:
    load = Load()
    rng = random.Random(0)
    rows: list[Sample] = []
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as http:
        began = time.monotonic()
        rows.append(await sample(http, pid, db, load, began))
        print_row(rows[0], rows[0])
        kinds = itertools.cycle(rng.sample(MIX, len(MIX)))
        next_sample, next_purge = sample_every, purge_every
        for n in itertools.count(1):
            at = n / rate
            if at >= seconds:
                break
            if at >= next_sample:  # before the purge: the store at its fullest
                rows.append(await sample(http, pid, db, load, began))
                print_row(rows[-1], rows[0])
                next_sample += sample_every
            if at >= next_purge:
                await purge(http, load)
                next_purge += purge_every
            await asyncio.sleep(max(0.0, began + at - time.monotonic()))
            job = asyncio.create_task(submit(http, next(kinds), load, rng))
            load.in_flight.add(job)
            job.add_done_callback(load.in_flight.discard)
        await asyncio.sleep(max(0.0, began + seconds - time.monotonic()))
        rows.append(await sample(http, pid, db, load, began))
        print_row(rows[-1], rows[0])
        if load.in_flight:
            await asyncio.wait(set(load.in_flight), timeout=30)
    return rows, load


async def outcomes(url: str, load: Load, timeout: float = 60.0) -> dict[str, tuple[int, int]]:
    """Once nothing is pending or running: {what: (expected, finished so)} from /metrics."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            params = {"status": ["pending", "running"], "limit": 1}
            if not (await http.get("/tasks", params=params)).json()["items"]:
                break
            await asyncio.sleep(0.5)
        finished = metric_values((await http.get("/metrics")).text, "tasks_finished_total")

    def count(name: str, status: str) -> int:
        return round(finished.get(f'{{name="{name}",status="{status}"}}', 0))

    return {
        "echo completed": (load.sent["echo"], count("echo", "completed")),
        "slow sleep completed": (load.sent["sleep"], count("sleep", "completed")),
        "boom failed": (load.sent["boom"], count("boom", "failed")),
        "sleep cancelled": (load.sent["cancel"], count("sleep", "cancelled")),
    }


def verdict(
    rows: list[Sample], reference_at: float, store_bound: float
) -> tuple[list[tuple[str, str, bool]], Sample | None]:
    """(what, observed, ok) for each flatness check, and the reference row."""
    reference = next((row for row in rows if row.elapsed >= reference_at - 1), None)
    checks: list[tuple[str, str, bool]] = []
    if reference is None or reference is rows[-1]:
        checks.append(("a reference row before the last", "none: the run is too short", False))
        return checks, reference
    after = rows[rows.index(reference) :]
    rss = max(row.rss_mb for row in after) - reference.rss_mb
    fds = max(row.fds for row in after) - reference.fds
    db = max(row.db_mb for row in after)
    db_limit = reference.db_mb * (1 + FLAT_DB_SHARE) + FLAT_DB_MB
    most = max(row.tasks for row in rows)
    checks.append((f"RSS growth <= {FLAT_RSS_MB:g} MB", f"{rss:+.1f} MB", rss <= FLAT_RSS_MB))
    checks.append((f"open fds growth <= {FLAT_FDS}", f"{fds:+d}", fds <= FLAT_FDS))
    checks.append(
        (
            f"db + wal <= {reference.db_mb:.2f} MB x {1 + FLAT_DB_SHARE:g} + {FLAT_DB_MB:g} MB",
            f"{db:.2f} MB",
            db <= db_limit,
        )
    )
    checks.append((f"tasks in store <= {store_bound:,.0f}", f"{most:,}", most <= store_bound))
    return checks, reference


def unexpected_log_records(log: str) -> list[str]:
    """Server log records (warnings and worse) other than the expected `boom` failures."""
    records: list[str] = []
    for line in log.splitlines():
        if re.match(r"(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b", line) or not records:
            records.append(line)
        else:
            records[-1] += "\n" + line
    return [r for r in records if not (r.startswith("ERROR") and "(boom)" in r.split("\n")[0])]


def start_server(db: Path, log: Path, env: dict[str, str]) -> Server:
    env = {"TASKS_MODULES": ",".join(SAMPLE_MODULES), "TASKS_LOG_LEVEL": "WARNING", **env}
    server = Server(
        db=db, log_path=log, env=env, args=["--no-access-log", "--log-level", "warning"]
    )
    return server.start()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=50.0, help="tasks/s")
    parser.add_argument("--sample-every", type=float, default=30.0, help="seconds")
    parser.add_argument(
        "--purge-every",
        type=float,
        default=None,
        help="seconds; default 30 (a quarter of the run if shorter)",
    )
    parser.add_argument(
        "--ttl",
        type=float,
        default=None,
        help="TASKS_RESULT_TTL, seconds; default 60, or "
        "half the run minus the purge period if less (at least 5)",
    )
    parser.add_argument("--concurrency", type=int, default=32, help="TASKS_CONCURRENCY")
    parser.add_argument("--connections", type=int, default=8, help="client keep-alive pool")
    args = parser.parse_args()

    seconds = args.minutes * 60
    purge_every = args.purge_every or min(30.0, seconds / 4)
    ttl = args.ttl if args.ttl is not None else max(5.0, min(60.0, seconds / 2 - purge_every))
    reference_at = max(args.sample_every, ttl + purge_every)
    store_bound = 1.25 * args.rate * (ttl + purge_every) + 200

    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        db, log = Path(tmp) / "soak.db", Path(tmp) / "server.log"
        env = {"TASKS_RESULT_TTL": f"{ttl:g}", "TASKS_CONCURRENCY": str(args.concurrency)}
        server = start_server(db, log, env)
        assert server.process is not None
        print(
            f"\nSoak: {args.minutes:g} min at {args.rate:g} tasks/s (of every 20: 14 echo, "
            f"2 sleep 1-4 s, 2 boom, 2 sleep cancelled after 0.3 s), TASKS_RESULT_TTL={ttl:g} s, "
            f"purge every {purge_every:g} s, TASKS_CONCURRENCY={args.concurrency}, "
            f"server pid {server.process.pid}, {os.cpu_count()} cores\n",
            flush=True,
        )
        print(
            "| elapsed | submitted | RSS MB | open fds | db + wal MB | tasks in store "
            "| slowest POST |"
        )
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
        try:
            rows, load = asyncio.run(
                soak(
                    server.url,
                    server.process.pid,
                    db,
                    seconds=seconds,
                    rate=args.rate,
                    sample_every=args.sample_every,
                    purge_every=purge_every,
                    connections=args.connections,
                )
            )
            finished = asyncio.run(outcomes(server.url, load))
        finally:
            server.stop()
        server_log = server.log_text()

    checks, reference = verdict(rows, reference_at, store_bound)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    client_cpu = 100 * (usage.ru_utime + usage.ru_stime) / max(rows[-1].elapsed, 1e-9)
    ref = f"the row at {reference.elapsed:.0f} s" if reference else "none"
    print(f"\nFlat, from the reference row ({ref}) to the end:\n")
    print("| check | observed | ok |")
    print("| --- | ---: | --- |")
    for what, observed, ok in checks:
        print(f"| {what} | {observed} | {'yes' if ok else 'NO'} |")
    print("\nOutcomes once everything finished (tasks_finished_total):\n")
    print("| what | sent | finished so | ok |")
    print("| --- | ---: | ---: | --- |")
    for what, (sent, seen) in finished.items():
        print(f"| {what} | {sent:,} | {seen:,} | {'yes' if sent == seen else 'NO'} |")
    answers = ", ".join(f"{k}: {v}" for k, v in sorted(load.answers.items()))
    print(f"\nanswers: {answers}; client CPU {client_cpu:.0f} % of one core")
    problems = [what for what, _, ok in checks if not ok]
    problems += [what for what, (sent, seen) in finished.items() if sent != seen]
    if load.failures:
        problems.append(f"failed requests: {dict(load.failures)}")
    unexpected = unexpected_log_records(server_log)
    if unexpected:
        print(f"\nthe server logged {len(unexpected)} unexpected records, the first ones:\n")
        print("\n".join(unexpected[:5]))
    if problems:
        print(f"\nFAILED: {'; '.join(problems)}")
        raise SystemExit(1)
    print("\nOK: RSS, open fds and the database stayed flat; every outcome as expected")


if __name__ == "__main__":
    main()
