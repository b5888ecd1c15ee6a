"""Process tasks: the API's latency while they burn every core, cancel, and per-attempt cost.

    python bench/process_tasks.py                      # about a minute
    python bench/process_tasks.py --requests 500 --cancels 50 --noops 3000

1. `uvicorn main:app` (TASKS_PROCESSES = the number of CPUs) answers GET /tasks/{id}, one
   request at a time: idle, then while that many `process=True` tasks burn every core, then
   while as many plain `def` tasks burn in threads. p50 and p99, and their ratio to idle.
2. Cancel of a running process task whose code never looks at ctx.cancelled: from the
   POST /cancel to `cancelled` read back, and to its worker process gone.
3. In-process (the app without HTTP, synchronous=FULL): no-op tasks end to end, in worker
   processes (a warm pool) and in threads, and what one process attempt costs over a thread.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stats import percentile
from tasks_service import Settings, create_app
from tests.harness import Server

CPUS = os.cpu_count() or 1


def gets(client: httpx.Client, task_id: str, count: int) -> list[float]:
    """Latencies in ms of `count` GET /tasks/{id}, one at a time."""
    took = []
    for _ in range(count):
        began = time.perf_counter()
        response = client.get(f"/tasks/{task_id}")
        took.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200
    return took


def wait_status(client: httpx.Client, task_id: str, wanted: set[str], *, poll: float) -> dict:
    while True:
        task = client.get(f"/tasks/{task_id}").json()
        if task["status"] in wanted:
            return task
        time.sleep(poll)


def wait_started(client: httpx.Client, task_id: str) -> int:
    """The worker's pid, once the task's code has begun (its first progress says it)."""
    while True:
        task = client.get(f"/tasks/{task_id}").json()
        if task["message"]:
            return int(task["message"].split()[1])
        time.sleep(0.01)


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state in ("Z", "X")


def under_load(client: httpx.Client, target: str, name: str, requests: int) -> list[float]:
    burners = [
        client.post("/tasks", json={"name": name, "params": {"seconds": 600}}).json()["id"]
        for _ in range(CPUS)
    ]
    for task_id in burners:
        wait_started(client, task_id)
    time.sleep(0.5)  # every core busy
    took = gets(client, target, requests)
    for task_id in burners:
        client.post(f"/tasks/{task_id}/cancel")
    for task_id in burners:
        wait_status(client, task_id, {"cancelled", "completed"}, poll=0.05)
    return took


def cancels(client: httpx.Client, count: int) -> tuple[list[float], list[float]]:
    stored, killed = [], []
    for _ in range(count):
        task_id = client.post(
            "/tasks", json={"name": "burn_process", "params": {"seconds": 600}}
        ).json()["id"]
        pid = wait_started(client, task_id)
        began = time.perf_counter()
        assert client.post(f"/tasks/{task_id}/cancel").status_code == 202
        wait_status(client, task_id, {"cancelled"}, poll=0.002)
        stored.append((time.perf_counter() - began) * 1000)
        while not gone(pid):
            time.sleep(0.001)
        killed.append((time.perf_counter() - began) * 1000)
    return stored, killed


async def noops_in_process(name: str, count: int, db: str) -> float:
    settings = Settings(
        db=db, modules=("bench.bench_tasks",), concurrency=8, processes=CPUS, log_level="ERROR"
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        service = app.state.service
        await asyncio.gather(*(service.enqueue(name) for _ in range(CPUS * 2)))  # warm
        await _drained(service)
        began = time.perf_counter()
        await asyncio.gather(*(service.enqueue(name) for _ in range(count)))
        await _drained(service)
        return count / (time.perf_counter() - began)


async def _drained(service: object) -> None:
    store = service.store  # type: ignore[attr-defined]
    while await store.list(statuses=["pending", "running"], name=None, before_id=None, limit=1):
        await asyncio.sleep(0.005)


def row(label: str, values: list[float], idle: list[float] | None = None) -> str:
    p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
    if idle is None:
        return f"| {label} | {p50:.2f} | {p99:.2f} | 1.0x | 1.0x |"
    ratio50, ratio99 = p50 / percentile(idle, 0.5), p99 / percentile(idle, 0.99)
    return f"| {label} | {p50:.2f} | {p99:.2f} | {ratio50:.1f}x | {ratio99:.1f}x |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--cancels", type=int, default=50)
    parser.add_argument("--noops", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "TASKS_MODULES": "bench.bench_tasks",
            "TASKS_PROCESSES": str(CPUS),
            "TASKS_LOG_LEVEL": "WARNING",
        }
        server = Server(db=f"{tmp}/tasks.db", log_path=Path(tmp) / "server.log", env=env)
        server.start()
        try:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                target = client.post("/tasks", json={"name": "noop"}).json()["id"]
                wait_status(client, target, {"completed"}, poll=0.01)
                gets(client, target, 50)  # warm
                idle = gets(client, target, args.requests)
                processes = under_load(client, target, "burn_process", args.requests)
                threads = under_load(client, target, "burn_thread", args.requests)
                stored, killed = cancels(client, args.cancels)
        finally:
            server.stop()
        in_process = asyncio.run(noops_in_process("noop_process", args.noops, f"{tmp}/p.db"))
        in_threads = asyncio.run(noops_in_process("noop_sync", args.noops, f"{tmp}/t.db"))

    print(f"\nGET /tasks/{{id}}, {args.requests} requests one at a time, {CPUS} CPUs (ms):\n")
    print("| load | p50 | p99 | p50 vs idle | p99 vs idle |")
    print("| --- | ---: | ---: | ---: | ---: |")
    print(row("idle", idle))
    print(row(f"{CPUS} process tasks burning", processes, idle))
    print(row(f"{CPUS} thread tasks burning", threads, idle))
    print(f"\nCancel of a running process task that never checks, {args.cancels} tries (ms):\n")
    print("| from POST /cancel to | p50 | p90 | p99 |")
    print("| --- | ---: | ---: | ---: |")
    for label, values in (("`cancelled` read back", stored), ("its process gone", killed)):
        cells = " | ".join(f"{percentile(values, q):.0f}" for q in (0.5, 0.9, 0.99))
        print(f"| {label} | {cells} |")
    per_attempt = (1 / in_process - 1 / in_threads) * 1000
    print(f"\nNo-op tasks in-process, {args.noops} each, warm pool of {CPUS}:\n")
    print("| where | tasks/s |")
    print("| --- | ---: |")
    print(f"| worker processes | {in_process:,.0f} |")
    print(f"| threads | {in_threads:,.0f} |")
    print(f"\nA process attempt costs {per_attempt:.2f} ms more than a thread's.")


if __name__ == "__main__":
    main()
