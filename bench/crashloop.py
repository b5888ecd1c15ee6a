"""Crash loop: SIGKILL the server again and again under load; no accepted task is lost or stuck.

    python bench/crashloop.py                     # 20 kills, 1 to 2 minutes
    python bench/crashloop.py --kills 5 --min-up 0.5 --max-up 2 --seed 1   # quick

Runs `uvicorn main:app` (TASKS_MODULES=tests.sample_tasks) on one SQLite file that is kept
across restarts. Client threads (--connections) keep POSTing `record` tasks at a steady total
rate: each task appends its own mark to a side-effect file, then sleeps a little, so work is in
flight when the server dies. Each client request gets a fresh mark, so every stored task can
be told apart in the side-effect file. Meanwhile the server is SIGKILLed at random moments
(after 1 to 5 s up, by default) and started again on the same file, --kills times. A request
that fails because the server is down (connection refused or reset, no answer) is sent again
until it gets one; only a `202` counts as accepted, and every accepted id is recorded.

After the last restart the clients stop; once nothing is pending or running (or a bounded
wait ran out), every task is read back over HTTP and checked: every task that got a `202`
exists (else lost), none stayed `pending` or `running` (stuck), each ended `completed`, and
its side effect ran at least once and no more often than its `attempts` say it started.

Why some tasks run twice: delivery is at-least-once. A task's side effect (here the line in
the file) and the commit of its `completed` status are two separate steps; a kill between
them leaves a task whose work happened but whose row still says `running`. At the restart
the service sees its owner is dead and runs it again, so the side effect happens twice. A
kill can do this only to the tasks running at that moment, so there are at most
TASKS_CONCURRENCY repeats per kill; such tasks show `attempts` > 1. (A task can also show
`attempts` 2 with a single run, when the kill came after its start was committed but before
it wrote its mark.) A POST whose task was committed but whose `202` never reached the client
is sent again and makes a second task: the client never heard of the first one, so it is
counted apart ("stored without an answer"), not as accepted, and it must still finish.

By contract a task cut short by 3 crashes ends `failed` ("interrupted 3 times"), so that a
task that kills its own process cannot loop forever. With kills at least a second apart a
rerun task finishes long before the next kill; kills every few tenths of a second
(--min-up 0.2 --max-up 1 with a backlog) can catch the same innocent task three times, and
it is then reported under "ended otherwise".

Exits non-zero when an accepted task is lost, stuck or not `completed`, or a side effect is
missing or ran more often than recorded; the working directory (database, side-effect file,
server logs) is then kept for inspection.
"""

from __future__ import annotations

import argparse
import collections
import random
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import SAMPLE_MODULES, Server, all_tasks


def start(server: Server, workdir: Path, number: int) -> float:
    """Start it (again: same database, same port) with its log in server-<number>.log, and
    wait until /health answers; returns how long that took."""
    server.log_path = workdir / f"server-{number}.log"
    began = time.monotonic()
    server.start()
    return time.monotonic() - began


@dataclass
class Client:
    """Counts shared by the client threads."""

    accepted: list[str] = field(default_factory=list)  # ids that got a 202
    refused: collections.Counter[int] = field(default_factory=collections.Counter)
    retries: int = 0  # requests sent again: no answer, or a 5xx
    lock: threading.Lock = field(default_factory=threading.Lock)


def client_loop(
    number: int,
    url: str,
    marks: Path,
    rate: float,
    task_seconds: tuple[float, float],
    stop: threading.Event,
    shared: Client,
) -> None:
    """POST `record` tasks at `rate` per second until `stop`; resend until an answer."""
    rng = random.Random(number)
    sent = 0
    next_at = time.monotonic()
    with httpx.Client(base_url=url, timeout=10) as http:
        while not stop.is_set():
            next_at = max(next_at + 1 / rate, time.monotonic() - 1)  # no burst after an outage
            time.sleep(max(0.0, next_at - time.monotonic()))
            while True:  # until the server answers
                sent += 1
                mark = f"c{number}-{sent}"  # fresh for every request: one mark, one task
                seconds = round(rng.uniform(*task_seconds), 3)
                body = {"name": "record", "params": {"path": str(marks), "mark": mark}}
                body["params"]["seconds"] = seconds
                try:
                    response = http.post("/tasks", json=body)
                except httpx.TransportError:
                    response = None
                if response is not None and response.status_code < 500:
                    with shared.lock:
                        if response.status_code == 202:
                            shared.accepted.append(response.json()["id"])
                        else:
                            shared.refused[response.status_code] += 1
                    break
                with shared.lock:
                    shared.retries += 1
                if stop.is_set() and response is None and not _up(http):
                    return  # the run is over and the server with it
                time.sleep(0.05)


def _up(http: httpx.Client) -> bool:
    try:
        return http.get("/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def unfinished(url: str) -> int:
    """How many tasks are pending or running (at most 500 counted)."""
    params = {"status": ["pending", "running"], "limit": 500}
    response = httpx.get(f"{url}/tasks", params=params, timeout=30)
    response.raise_for_status()
    return len(response.json()["items"])


@dataclass
class Result:
    kills: int
    accepted: int
    completed: int
    lost: int
    stuck: int
    other_status: dict[str, int]  # accepted tasks that ended otherwise than completed
    unanswered: int  # stored without a 202 (the answer was cut by a kill)
    unanswered_unfinished: int
    ran_more_than_once: int
    extra_runs: int  # side-effect runs beyond the first, over all tasks
    max_runs: int
    attempts_over_one: int
    max_attempts_seen: int
    missing_side_effect: int  # completed, but its mark is not in the file
    runs_over_attempts: int  # the side effect ran more often than `attempts` says
    phantom_marks: int  # marks in the file that no stored task has
    refused: dict[int, int]
    retries: int
    seconds: float
    slowest_restart: float
    drain_seconds: float
    workdir: Path

    @property
    def ok(self) -> bool:
        return not (
            self.lost
            or self.stuck
            or self.other_status
            or self.unanswered_unfinished
            or self.missing_side_effect
            or self.runs_over_attempts
            or self.phantom_marks
            or self.accepted == 0
        )

    def problems(self) -> list[str]:
        found = []
        if self.accepted == 0:
            found.append("no task was accepted")
        if self.lost:
            found.append(f"{self.lost} accepted tasks lost")
        if self.stuck:
            found.append(f"{self.stuck} accepted tasks stuck pending or running")
        if self.other_status:
            found.append(f"accepted tasks not completed: {self.other_status}")
        if self.unanswered_unfinished:
            found.append(f"{self.unanswered_unfinished} unanswered tasks never finished")
        if self.missing_side_effect:
            found.append(f"{self.missing_side_effect} completed tasks whose side effect is missing")
        if self.runs_over_attempts:
            found.append(f"{self.runs_over_attempts} tasks ran more often than their attempts")
        if self.phantom_marks:
            found.append(f"{self.phantom_marks} side effects of tasks that are not stored")
        return found


def crashloop(
    workdir: Path,
    *,
    kills: int = 20,
    connections: int = 8,
    rate: float = 40.0,
    concurrency: int = 8,
    task_seconds: tuple[float, float] = (0.05, 0.25),
    up_seconds: tuple[float, float] = (1.0, 5.0),
    drain_timeout: float = 60.0,
    seed: int | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> Result:
    """Run the crash loop in `workdir` (database, side-effect file, server logs) and check."""
    began = time.monotonic()
    rng = random.Random(seed)
    marks = workdir / "marks"
    server = Server(
        db=workdir / "tasks.db",
        env={
            "TASKS_MODULES": ",".join(SAMPLE_MODULES),
            "TASKS_CONCURRENCY": str(concurrency),
            "TASKS_LOG_LEVEL": "WARNING",
        },
        args=["--no-access-log"],
    )
    shared = Client()
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=client_loop,
            args=(n, server.url, marks, rate / connections, task_seconds, stop, shared),
            daemon=True,
        )
        for n in range(connections)
    ]
    slowest_restart = 0.0
    try:
        start(server, workdir, 1)
        for thread in threads:
            thread.start()
        for kill in range(1, kills + 1):
            time.sleep(rng.uniform(*up_seconds))
            server.kill()
            restart = start(server, workdir, kill + 1)
            slowest_restart = max(slowest_restart, restart)
            progress(
                f"kill {kill}/{kills}: {len(shared.accepted)} accepted so far, "
                f"back in {restart:.2f} s"
            )
        time.sleep(1.0)  # some load on the last incarnation too
        stop.set()
        for thread in threads:
            thread.join(30)
        drain_began = time.monotonic()
        while unfinished(server.url) and time.monotonic() - drain_began < drain_timeout:
            time.sleep(0.1)
        drain_seconds = time.monotonic() - drain_began
        tasks = all_tasks(server)
    finally:
        stop.set()
        server.stop()

    accepted = set(shared.accepted)
    by_id = {task["id"]: task for task in tasks}
    runs = collections.Counter(marks.read_text().split() if marks.exists() else [])
    mine = [by_id[task_id] for task_id in accepted if task_id in by_id]
    unanswered = [task for task in tasks if task["id"] not in accepted]
    other: collections.Counter[str] = collections.Counter(
        task["status"] for task in mine if task["status"] not in ("completed", "pending", "running")
    )
    stored_marks = {task["params"]["mark"] for task in tasks}
    return Result(
        kills=kills,
        accepted=len(accepted),
        completed=sum(task["status"] == "completed" for task in mine),
        lost=len(accepted - by_id.keys()),
        stuck=sum(task["status"] in ("pending", "running") for task in mine),
        other_status=dict(other),
        unanswered=len(unanswered),
        unanswered_unfinished=sum(t["status"] in ("pending", "running") for t in unanswered),
        ran_more_than_once=sum(runs[task["params"]["mark"]] > 1 for task in mine),
        extra_runs=sum(max(0, runs[task["params"]["mark"]] - 1) for task in tasks),
        max_runs=max((runs[task["params"]["mark"]] for task in mine), default=0),
        attempts_over_one=sum(task["attempts"] > 1 for task in mine),
        max_attempts_seen=max((task["attempts"] for task in mine), default=0),
        missing_side_effect=sum(
            task["status"] == "completed" and runs[task["params"]["mark"]] == 0 for task in tasks
        ),
        runs_over_attempts=sum(runs[task["params"]["mark"]] > task["attempts"] for task in tasks),
        phantom_marks=len(set(runs) - stored_marks),
        refused=dict(shared.refused),
        retries=shared.retries,
        seconds=time.monotonic() - began,
        slowest_restart=slowest_restart,
        drain_seconds=drain_seconds,
        workdir=workdir,
    )


def table(result: Result, concurrency: int) -> str:
    share = 100 * result.ran_more_than_once / result.accepted if result.accepted else 0.0
    rows = [
        ("kills (SIGKILL, then restart on the same file)", f"{result.kills}"),
        ("tasks accepted (202)", f"{result.accepted:,}"),
        ("completed", f"{result.completed:,}"),
        ("lost (202 but not stored)", f"{result.lost}"),
        ("stuck (pending or running at the end)", f"{result.stuck}"),
        ("ended otherwise", ", ".join(f"{k} {v}" for k, v in result.other_status.items()) or "0"),
        ("ran more than once", f"{result.ran_more_than_once} ({share:.2f} %)"),
        ("max runs of one task", f"{result.max_runs}"),
        ("attempts > 1", f"{result.attempts_over_one} (max {result.max_attempts_seen})"),
        (
            "extra runs, all tasks (bound: concurrency x kills)",
            f"{result.extra_runs} (<= {concurrency * result.kills})",
        ),
        (
            "side effect missing / ran more than attempts",
            f"{result.missing_side_effect} / {result.runs_over_attempts}",
        ),
        ("stored without an answer (resent POSTs)", f"{result.unanswered}"),
        ("requests resent (server down)", f"{result.retries:,}"),
        ("refused (4xx)", ", ".join(f"{k}: {v}" for k, v in result.refused.items()) or "0"),
        ("slowest restart to healthy", f"{result.slowest_restart:.2f} s"),
        ("drain after the last restart", f"{result.drain_seconds:.1f} s"),
        ("total run time", f"{result.seconds:.1f} s"),
    ]
    lines = ["| measure | value |", "| --- | ---: |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--connections", type=int, default=8, help="client threads")
    parser.add_argument("--rate", type=float, default=40.0, help="tasks/s, all clients")
    parser.add_argument("--concurrency", type=int, default=8, help="TASKS_CONCURRENCY")
    parser.add_argument("--min-up", type=float, default=1.0, help="seconds up before a kill")
    parser.add_argument("--max-up", type=float, default=5.0)
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workdir", type=Path, default=None, help="kept; default: a temp dir")
    args = parser.parse_args()

    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="crashloop-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"crash loop: {args.kills} kills, {args.rate:g} record tasks/s from "
        f"{args.connections} connections, TASKS_CONCURRENCY={args.concurrency}, seed {seed}, "
        f"in {workdir}",
        flush=True,
    )
    result = crashloop(
        workdir,
        kills=args.kills,
        connections=args.connections,
        rate=args.rate,
        concurrency=args.concurrency,
        up_seconds=(args.min_up, args.max_up),
        drain_timeout=args.drain_timeout,
        seed=seed,
        progress=lambda line: print(line, flush=True),
    )
    print(f"\n{table(result, args.concurrency)}\n")
    if not result.ok:
        print("FAILED: " + "; ".join(result.problems()))
        print(f"kept {workdir} (database, side-effect file, server logs)")
        raise SystemExit(1)
    print("OK: every accepted task completed; none lost, none stuck")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
