"""End-to-end throughput over HTTP with 1 and N uvicorn workers, on SQLite and on PostgreSQL.

    python bench/throughput.py                    # both stores, 5 s of load per row
    python bench/throughput.py --stores sqlite --workers 1 2 3 --seconds 10

Starts `uvicorn bench.app:app` (the service plus baseline routes) on a fresh database. First
the baselines in the first server: a bare FastAPI POST endpoint, and FastAPI's
BackgroundTasks running a no-op (keeping nothing). Then, for each store and each setup, no-op
tasks POSTed to /tasks with wrk (Debian's `wrk` package) from 32 connections; it waits until
none is pending or running. Every task is durable and really runs: SQLite with
synchronous=FULL, PostgreSQL on a private server this script starts (tests/postgres.py, with
durable=True: fsync, full_page_writes and synchronous_commit on), a fresh database per row.

The setups: `--workers N` (one uvicorn, N worker processes sharing its port) and
`--instances N` (N separate uvicorns on N ports, on the same database, each driven by its own
wrk with 1/N of the connections; requests are summed, latencies are the worst wrk's). With
more than one worker in the plan, the bare endpoint is also measured with `--workers 2`: what
a second process can add at all on this machine, where wrk shares the cores. Last, pickup
over HTTP on the idle first server: POST /tasks of a task returning its start time, and
BackgroundTasks, one request at a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stats import percentile
from tests.harness import Server, stop_all
from tests.postgres import PostgresServer

STORE_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
UNFINISHED = "SELECT count(*) FROM tasks WHERE status IN ('pending', 'running')"
QUIET = ["--log-level", "warning", "--no-access-log"]


def start_server(
    workers: int, db: str, extra_env: dict[str, str], app: str = "bench.app:app"
) -> Server:
    env = {
        "TASKS_MODULES": "bench.bench_tasks",
        "TASKS_LOG_LEVEL": "WARNING",
        "TASKS_CONCURRENCY": "64",
        **extra_env,
    }
    server = Server(db=db, app=app, workers=workers, env=env, args=QUIET)
    server.start(wait_healthy=False)
    # Ready once every worker has answered: wrk's connections stay open, so any that reached
    # the socket while one worker was still starting would all go to the other for the whole
    # row.
    try:
        server.wait_every_worker(30)
    except AssertionError as exc:
        raise SystemExit(str(exc)) from None
    time.sleep(0.2)
    return server


@contextmanager
def servers(
    instances: int, workers: int, db: str, extra_env: dict[str, str]
) -> Iterator[list[str]]:
    """`instances` separate uvicorns of `workers` workers each, all on `db`; their URLs."""
    started: list[Server] = []
    try:
        for _ in range(instances):
            started.append(start_server(workers, db, extra_env))
        yield [server.url for server in started]
    finally:
        stop_all(started, timeout=60)


class Database:
    """Where one row's tasks are stored (TASKS_DB), and how many are not finished yet."""

    def __init__(self, store: str, tmp: Path, postgres: PostgresServer | None, name: str):
        self.store = store
        self._postgres = postgres
        self._name = name
        if store == "sqlite":
            self.url = str(tmp / f"{name}.db")
            self._path = Path(self.url)
        else:
            assert postgres is not None
            postgres.create_database(name)
            self.url = postgres.url(name)
            self._loop = asyncio.new_event_loop()
            self._conn: asyncpg.Connection | None = None

    def count(self, sql: str) -> int:
        if self.store == "sqlite":
            with sqlite3.connect(f"file:{self._path}?mode=ro", uri=True, timeout=30) as conn:
                (value,) = conn.execute(sql).fetchone()
            conn.close()
            return int(value)
        if self._conn is None:
            self._conn = self._loop.run_until_complete(asyncpg.connect(self.url))
        return int(self._loop.run_until_complete(self._conn.fetchval(sql)))

    def close(self) -> None:
        if self.store == "postgres":
            assert self._postgres is not None
            if self._conn is not None:
                self._loop.run_until_complete(self._conn.close())
            self._loop.close()
            self._postgres.drop_database(self._name)


WRK_POST = """
wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk(urls: list[str], body: str, seconds: float, connections: int) -> dict[str, float]:
    """POST `body` with wrk to each of `urls` at once, the connections split between them;
    requests made in all, their rate, and the worst wrk's latency percentiles."""
    if shutil.which("wrk") is None:
        raise SystemExit("needs wrk: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_POST % body)
    share = max(1, connections // len(urls))
    command = ["wrk", "-t1", f"-c{share}", f"-d{seconds:g}s", "--latency", "-s", script.name]
    runs = [subprocess.Popen([*command, url], stdout=subprocess.PIPE, text=True) for url in urls]
    outputs = [run.communicate()[0] for run in runs]
    os.unlink(script.name)
    for run, output in zip(runs, outputs, strict=True):
        if run.returncode != 0 or "Non-2xx" in output:
            raise SystemExit(f"some requests failed:\n{output}")
    requests = sum(
        next(int(line.split()[0]) for line in output.splitlines() if "requests in" in line)
        for output in outputs
    )
    return {
        "requests": requests,
        "rate": requests / seconds,
        "p50_ms": max(wrk_latency(output, "50%") for output in outputs),
        "p99_ms": max(wrk_latency(output, "99%") for output in outputs),
    }


def drive(
    urls: list[str], db: Database, seconds: float, connections: int, name: str
) -> dict[str, float]:
    """wrk POSTs tasks for `seconds`; then wait until every accepted task has run."""
    began = time.perf_counter()
    result = wrk([f"{url}/tasks" for url in urls], json.dumps({"name": name}), seconds, connections)
    while db.count(UNFINISHED):
        time.sleep(0.01)
    finished = time.perf_counter()
    result["tasks"] = db.count("SELECT count(*) FROM tasks")
    result["end_to_end_rate"] = result["tasks"] / (finished - began)
    return result


def baselines(url: str, seconds: float, connections: int) -> dict[str, dict[str, float]]:
    """The bare endpoint and BackgroundTasks, in the same uvicorn as POST /tasks."""
    bare = wrk([f"{url}/bench/bare"], '{"name": "noop"}', seconds, connections)
    began = time.perf_counter()
    background = wrk([f"{url}/bench/background"], '{"name": "noop"}', seconds, connections)
    while httpx.get(f"{url}/bench/background").json()["runs"] < background["requests"]:
        time.sleep(0.01)
    background["end_to_end_rate"] = background["requests"] / (time.perf_counter() - began)
    return {"bare": bare, "background": background}


def pickups(url: str, samples: int) -> dict[str, list[float]]:
    """Pickup over HTTP on an idle service, in ms: from just before the POST to the first
    line of the task (its wall-clock start, read back afterwards), one request at a time;
    for POST /tasks and for BackgroundTasks."""
    measured: dict[str, list[float]] = {"tasks": []}
    with httpx.Client(base_url=url, timeout=10) as client:
        for _ in range(samples):
            began = time.time()
            task_id = client.post("/tasks", json={"name": "clock"}).json()["id"]
            while (task := client.get(f"/tasks/{task_id}").json())["status"] != "completed":
                time.sleep(0.001)
            measured["tasks"].append((task["result"] - began) * 1000)
            time.sleep(0.005)  # idle again
        measured["background"] = background_pickups(client, samples)
    return measured


def background_pickups(client: httpx.Client, samples: int) -> list[float]:
    """BackgroundTasks: from just before the POST to the no-op's first line, ms."""
    taken = []
    for _ in range(samples):
        before = client.get("/bench/background").json()["runs"]
        began = time.time()
        client.post("/bench/background", json={"name": "noop"})
        while (runs := client.get("/bench/background").json())["runs"] == before:
            time.sleep(0.001)
        taken.append((runs["last_started"] - began) * 1000)
        time.sleep(0.005)
    return taken


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


@dataclass(frozen=True)
class Setup:
    store: str  # "sqlite" or "postgres"
    instances: int  # separate uvicorn processes, each on its own port
    workers: int  # uvicorn --workers of each

    @property
    def label(self) -> str:
        if self.instances > 1:
            return f"{self.instances} instances"
        return f"{self.workers} worker{'s' if self.workers > 1 else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--stores", nargs="+", default=["sqlite", "postgres"], choices=STORE_NAMES)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument(
        "--instances", type=int, nargs="*", default=[2], help="separate uvicorns, 1 worker each"
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--samples", type=int, default=200, help="pickups over HTTP, each")
    parser.add_argument("--task", default="noop", choices=["noop", "noop_sync"])
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    args = parser.parse_args()

    plan = [
        Setup(store, instances, workers)
        for store in args.stores
        for instances, workers in [(1, w) for w in args.workers] + [(n, 1) for n in args.instances]
    ]
    env = {"TASKS_SQLITE_SYNCHRONOUS": args.synchronous}
    rows: list[tuple[Setup, dict[str, float]]] = []
    base: dict[str, dict[str, float]] = {}
    base_two: dict[str, float] | None = None
    pickup: dict[str, list[float]] = {}
    pickup_store = ""
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        postgres = None
        if "postgres" in args.stores:
            postgres = stack.enter_context(PostgresServer(tmp / "postgres", durable=True))
        if any(setup.workers > 1 for setup in plan):
            # What a second worker can add on this machine at all, wrk sharing its cores.
            with servers(1, 2, str(tmp / "ceiling.db"), env) as urls:
                base_two = wrk(
                    [f"{urls[0]}/bench/bare"], '{"name": "noop"}', args.seconds, args.connections
                )
        for number, setup in enumerate(plan):
            db = Database(setup.store, tmp, postgres, f"bench{number}")
            try:
                with servers(setup.instances, setup.workers, db.url, env) as urls:
                    if not base:
                        base = baselines(urls[0], args.seconds, args.connections)
                        pickup = pickups(urls[0], args.samples)
                        pickup_store = STORE_NAMES[setup.store]
                    result = drive(urls, db, args.seconds, args.connections, args.task)
            finally:
                db.close()
            rows.append((setup, result))

    bare, background = base["bare"], base["background"]
    print(
        f"\nPOSTs by wrk for {args.seconds:g} s each, {args.connections} connections, "
        f"`{args.task}` tasks, SQLite synchronous={args.synchronous}, PostgreSQL fsync and "
        f"synchronous_commit on, {os.cpu_count()} cores\n"
    )
    print("| what | store | durable | requests/s | tasks/s end to end | p50 | p99 |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    print(
        f"| bare FastAPI POST endpoint | - | - | {bare['rate']:,.0f} | - | "
        f"{bare['p50_ms']:.1f} ms | {bare['p99_ms']:.1f} ms |"
    )
    if base_two is not None:
        print(
            f"| bare FastAPI POST endpoint, 2 workers | - | - | {base_two['rate']:,.0f} | - | "
            f"{base_two['p50_ms']:.1f} ms | {base_two['p99_ms']:.1f} ms |"
        )
    print(
        f"| FastAPI BackgroundTasks | - | no | {background['rate']:,.0f} | "
        f"{background['end_to_end_rate']:,.0f} | {background['p50_ms']:.1f} ms | "
        f"{background['p99_ms']:.1f} ms |"
    )
    for setup, r in rows:
        print(
            f"| POST /tasks, {setup.label} | {STORE_NAMES[setup.store]} | yes | "
            f"{r['rate']:,.0f} | {r['end_to_end_rate']:,.0f} | {r['p50_ms']:.1f} ms | "
            f"{r['p99_ms']:.1f} ms |"
        )
    print("\nRatios (targets: POST/s >= 0.8x bare; end to end >= 1x BackgroundTasks;")
    print("2 workers >= 1.5x one)\n")
    if base_two is not None:
        print(
            f"- this machine's ceiling: the bare endpoint with 2 workers vs 1: "
            f"{base_two['rate'] / bare['rate']:.2f}x"
        )
    ones: dict[str, float] = {}
    for store in args.stores:
        mine = [(setup, r) for setup, r in rows if setup.store == store]
        one = next((r for setup, r in mine if setup.instances == setup.workers == 1), None)
        if one is None:
            continue
        ones[store] = one["end_to_end_rate"]
        name = STORE_NAMES[store]
        print(f"- {name}: POST /tasks vs bare endpoint: {one['rate'] / bare['rate']:.2f}x")
        print(
            f"- {name}: end to end vs BackgroundTasks: "
            f"{one['end_to_end_rate'] / background['end_to_end_rate']:.2f}x"
        )
        for setup, r in mine:
            if setup.instances * setup.workers > 1:
                print(f"- {name}: {setup.label} vs 1: {r['end_to_end_rate'] / ones[store]:.2f}x")
    if len(ones) == 2:
        print(f"- PostgreSQL vs SQLite, 1 worker: {ones['postgres'] / ones['sqlite']:.2f}x")

    print(
        f"\nPickup over HTTP on an idle service ({pickup_store}, 1 worker): from before the "
        f"POST to the task's first line, {args.samples} requests one at a time, ms\n"
    )
    print("| what | durable | p50 | p90 | p99 |")
    print("| --- | --- | ---: | ---: | ---: |")
    for what, durable, values in (
        ("FastAPI BackgroundTasks", "no", pickup["background"]),
        ("POST /tasks", "yes", pickup["tasks"]),
    ):
        print(
            f"| {what} | {durable} | {percentile(values, 0.5):.2f} | "
            f"{percentile(values, 0.9):.2f} | {percentile(values, 0.99):.2f} |"
        )
    ratio = percentile(pickup["tasks"], 0.5) / percentile(pickup["background"], 0.5)
    print(f"\n- POST /tasks pickup p50 vs BackgroundTasks: {ratio:.2f}x (target: <= 1x)")


if __name__ == "__main__":
    main()
