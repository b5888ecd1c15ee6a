"""Where pickup over HTTP goes: a timestamp at each stage of one POST /tasks on an idle service.

    python bench/pickup_stages.py               # 300 requests per row
    python bench/pickup_stages.py --samples 1000

Starts `uvicorn bench.pickup_stages:app`: bench/app.py with a wall-clock timestamp taken as
the request reaches the app, as the runner inserts the task, as the writer thread begins and
ends its transaction, as the task is launched, and as the answer is written (a diagnostic:
it wraps those methods, costing a few microseconds each). One request at a time, then the
task's first line (the `clock` task returns its start time) and the stages are read back.
Rows for SQLite with synchronous=FULL and NORMAL, on fresh databases, and FastAPI's
BackgroundTasks in the same server as the baseline: p50 ms from just before the POST.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.stats import percentile
from bench.throughput import background_pickups, start_server

APP = "bench.pickup_stages:app"
STAGES = {
    "app": "the request reaches the app",
    "insert": "validated; the runner inserts the task",
    "transaction": "the writer thread begins the transaction",
    "committed": "committed (fsync done with FULL)",
    "launched": "the task is launched on the event loop",
    "answered": "the 202 is written",
    "first_line": "the task's first line runs",
    "client": "the client has the 202",
}
marks: list[tuple[str, float]] = []


def instrumented() -> Any:
    """bench/app.py's app, timestamping each stage of POST /tasks (in the server)."""
    from bench.app import app
    from tasks_service.engines.sqlite import SqliteStore
    from tasks_service.runtime.runner import Runner

    def timed(cls: type, name: str, stage: str, *, after: str | None = None) -> None:
        original: Callable[..., Any] = getattr(cls, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            marks.append((stage, time.time()))
            result = original(*args, **kwargs)
            if after is not None:
                marks.append((after, time.time()))
            return result

        setattr(cls, name, wrapper)

    timed(Runner, "_insert", "insert")
    timed(Runner, "_launch", "launched")
    timed(SqliteStore, "_run_transaction", "transaction", after="committed")

    class Stamp:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "http" or scope["path"] != "/tasks" or scope["method"] != "POST":
                await self.inner(scope, receive, send)
                return
            marks.append(("app", time.time()))

            async def stamped(message: Any) -> None:
                if message["type"] == "http.response.body":
                    marks.append(("answered", time.time()))
                await send(message)

            await self.inner(scope, receive, stamped)

    app.add_middleware(Stamp)

    @app.get("/bench/marks")
    def take_marks() -> list[tuple[str, float]]:
        taken = list(marks)
        marks.clear()
        return taken

    return app


def __getattr__(name: str) -> Any:
    # `uvicorn bench.pickup_stages:app` imports the instrumented app; running this file does not.
    if name == "app":
        value = instrumented()
        globals()["app"] = value
        return value
    raise AttributeError(name)


def stages_of_posts(client: httpx.Client, samples: int) -> dict[str, list[float]]:
    """Each stage's time after just before the POST, ms, one request at a time."""
    seen: dict[str, list[float]] = {stage: [] for stage in STAGES}
    client.get("/bench/marks")
    for _ in range(samples):
        began = time.time()
        task_id = client.post("/tasks", json={"name": "clock"}).json()["id"]
        answered = time.time()
        while (task := client.get(f"/tasks/{task_id}").json())["status"] != "completed":
            time.sleep(0.001)
        first: dict[str, float] = {"first_line": task["result"], "client": answered}
        for stage, at in client.get("/bench/marks").json():
            if at >= began:  # not a heartbeat's write while the service was idle
                first.setdefault(stage, at)
        for stage, at in first.items():
            seen[stage].append((at - began) * 1000)
        time.sleep(0.005)  # idle again
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    columns: dict[str, dict[str, list[float]]] = {}
    background: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for synchronous in ("FULL", "NORMAL"):
            sqlite = {"TASKS_SQLITE_SYNCHRONOUS": synchronous}
            server = start_server(1, f"{tmp}/{synchronous}.db", sqlite, APP)
            try:
                with httpx.Client(base_url=server.url, timeout=10) as client:
                    columns[synchronous] = stages_of_posts(client, args.samples)
                    if not background:
                        background = background_pickups(client, args.samples)
            finally:
                server.stop()
    print(
        f"\nOne POST /tasks at a time on an idle service, {args.samples} requests per column: "
        "p50 ms from just before the POST\n"
    )
    print("| stage | SQLite FULL | SQLite NORMAL |")
    print("| --- | ---: | ---: |")
    for stage, what in STAGES.items():
        cells = " | ".join(f"{percentile(columns[s][stage], 0.5):.2f}" for s in columns)
        print(f"| {what} | {cells} |")
    print(
        f"\nFastAPI BackgroundTasks in the same server, from just before the POST to the "
        f"no-op's first line: p50 {percentile(background, 0.5):.2f} ms"
    )
    for synchronous, seen in columns.items():
        commit = [c - t for c, t in zip(seen["committed"], seen["transaction"], strict=True)]
        print(
            f"- {synchronous}: the transaction itself p50 {percentile(commit, 0.5):.2f} ms; "
            f"pickup vs BackgroundTasks "
            f"{percentile(seen['first_line'], 0.5) / percentile(background, 0.5):.2f}x"
        )


if __name__ == "__main__":
    main()
