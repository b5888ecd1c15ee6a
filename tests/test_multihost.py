"""Several hosts, one PostgreSQL database: what `--workers N` promises holds across hosts.

Each instance is a real `uvicorn main:app` with TASKS_DB a postgresql:// URL and a log of its
own. Where the test needs separate machines (leases instead of pids), an instance runs under
`unshare` with a hostname, a pid namespace and a /proc of its own: to the service it is
another host, whose pids mean nothing here (each is pid 1 in its namespace), so only the
lease can tell whether it lives.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from tests.harness import SAMPLE_MODULES, Server, ServerFactory, get, post, wait_until
from tests.helpers import TERMINAL, statuses
from tests.postgres import PostgresServer

pytestmark = pytest.mark.slow

Instances = Callable[..., list[Server]]
SCHEDULED = ",".join((*SAMPLE_MODULES, "tests.scheduled_tasks"))


# -- helpers ---------------------------------------------------------------------------------


def as_host(hostname: str) -> list[str]:
    """A command prefix making what follows another machine to the service: its own
    hostname (liveness.this_host() differs) and its own pids (pid 1, meaningless here).
    SIGKILL of the `unshare` process kills the whole namespace (--kill-child)."""
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs unshare(1) and root for namespaces")
    return [
        *("unshare", "--uts", "--pid", "--mount-proc", "--kill-child", "--"),
        *("sh", "-c", 'hostname "$0" && exec "$@"', hostname),
    ]


def children_of(pid: int) -> list[int]:
    """Processes whose parent is `pid` (the service under an `unshare` process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry.name))
    return found


def terminate(server: Server) -> None:
    """SIGTERM the service itself: `unshare --fork` ignores SIGTERM and would not pass it on."""
    if server.process is None or server.process.poll() is not None:
        return
    for pid in children_of(server.process.pid) if server.prefix else [server.process.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


@pytest.fixture
def instances(server_factory: ServerFactory, pg_url: str, tmp_path: Path) -> Iterator[Instances]:
    """Start instances sharing one fresh database, all at once (their startups overlap), each
    with its own log; `hosts=True` makes each a machine of its own named host-<name>."""
    started: list[Server] = []

    def start(
        names: list[str],
        *,
        env: dict[str, str] | None = None,
        envs: dict[str, dict[str, str]] | None = None,
        hosts: bool = False,
    ) -> list[Server]:
        servers = [
            server_factory(
                db=pg_url,
                log_path=tmp_path / f"instance-{name}.log",
                env={**(env or {}), **(envs or {}).get(name, {})},
                prefix=as_host(f"host-{name}") if hosts else [],
            )
            for name in names
        ]
        started.extend(servers)
        for server in servers:
            server.start(wait_healthy=False)
        for server in servers:
            server.wait_healthy()
        return servers

    yield start
    # All at once, and before pg_url drops the database under them; one stuck in its
    # shutdown is killed rather than holding the run up.
    for server in started:
        terminate(server)
    deadline = time.monotonic() + 15
    for server in started:
        if server.process is not None:
            try:
                server.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                server.kill()


def listed(server: Server, **filters: Any) -> list[dict[str, Any]]:
    """Every task GET /tasks lists with these filters, all pages."""
    tasks: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 500, **filters}
    while True:
        response = httpx.get(f"{server.url}/tasks", params=params, timeout=10)
        assert response.status_code == 200, response.text
        page = response.json()
        tasks.extend(page["items"])
        if page["next_cursor"] is None:
            return tasks
        params["cursor"] = page["next_cursor"]


def runs_of(path: Path) -> list[list[str]]:
    """The lines `record_pid` / `record_host` appended, split into fields."""
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def timestamp(iso: str) -> float:
    """Seconds since the epoch of an ISO 8601 time from the API."""
    return datetime.fromisoformat(iso).timestamp()


def has_detail(body: str) -> bool:
    """An error body as FastAPI writes it: JSON with a non-empty `detail`."""
    try:
        return bool(json.loads(body).get("detail"))
    except (ValueError, AttributeError):
        return False


def running_count(server: Server) -> int:
    """How many attempts this instance runs now (its /health says)."""
    response = httpx.get(f"{server.url}/health", timeout=10)
    assert response.status_code == 200, response.text
    count: int = response.json()["running"]
    return count


def peek(pg_url: str, sql: str) -> list[asyncpg.Record]:
    """Rows straight from the database, for what the API does not show (owners, heartbeats)."""

    async def read() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(pg_url, timeout=10)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(read())


def last_heartbeats(pg_url: str) -> dict[str, float]:
    """Each registered worker's host and last heartbeat, by the database's clock."""
    rows = peek(pg_url, "SELECT host, seen_at FROM workers")
    return {row["host"].split("/")[0]: row["seen_at"] for row in rows}


def unfinished(pg_url: str, servers: list[Server]) -> list[str]:
    """Tasks not yet terminal: status, owner, and whether the owner is a live instance."""
    live = {}
    for name, server in zip("abcdef", servers, strict=False):
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            live[httpx.get(f"{server.url}/health", timeout=5).json()["worker"]] = name
    rows = peek(
        pg_url,
        "SELECT id, status, owner, attempts FROM tasks "
        "WHERE status NOT IN ('completed', 'failed', 'cancelled') ORDER BY id",
    )
    return [
        f"{r['id']} {r['status']} attempts={r['attempts']} owner={r['owner']}"
        f" ({'live instance ' + live[r['owner']] if r['owner'] in live else 'not live'})"
        for r in rows
    ]


# -- the tests -------------------------------------------------------------------------------


def test_each_task_runs_exactly_once_across_instances(instances: Instances, tmp_path: Path) -> None:
    """300 tasks posted round-robin to three instances, concurrently: each side effect
    happens once, on one of them, and the work is shared."""
    marks = tmp_path / "marks"
    servers = instances(["a", "b", "c"])

    def start(i: int) -> str:
        params = {"path": str(marks), "mark": str(i), "seconds": 0.02}
        return str(post(servers[i % 3], "record_pid", params=params)["id"])

    with ThreadPoolExecutor(16) as pool:
        accepted = set(pool.map(start, range(300)))
    wait_until(
        lambda: all(t["status"] in TERMINAL for t in listed(servers[0], name="record_pid")),
        what="all 300 to finish",
    )
    tasks = listed(servers[1], name="record_pid")
    assert {t["id"] for t in tasks} == accepted
    assert statuses(tasks) == {"completed": 300}
    assert {t["attempts"] for t in tasks} == {1}
    runs = runs_of(marks)
    assert collections.Counter(mark for mark, _ in runs) == {str(i): 1 for i in range(300)}
    by_pid = collections.Counter(pid for _, pid in runs)
    assert set(by_pid) == {str(s.process.pid) for s in servers if s.process}, by_pid


def test_a_one_second_schedule_fires_once_per_tick_across_instances(
    instances: Instances, tmp_path: Path
) -> None:
    """Every instance runs the same 1 s schedule; each tick makes one run in all, and each
    run executes once."""
    ticks_file = tmp_path / "ticks"
    env = {"TASKS_MODULES": SCHEDULED, "TICKS_FILE": str(ticks_file)}
    servers = instances(["a", "b", "c"], env=env)
    all_up = time.time()
    time.sleep(4.5)  # its first four ticks come by all_up + 4, well before the pause
    response = httpx.post(f"{servers[0].url}/schedules/tick/pause", timeout=10)
    assert response.status_code == 200 and response.json()["paused"] is True
    wait_until(
        lambda: all(t["status"] in TERMINAL for t in listed(servers[1], name="tick")),
        timeout=10,
        what="the last tick's run to finish",
    )
    runs = listed(servers[2], name="tick")
    ticks = sorted(timestamp(t["run_at"]) for t in runs)
    print(f"\n{len(ticks)} ticks, {sum(t >= all_up for t in ticks)} once all were up")
    assert len(ticks) == len(set(ticks)), "a tick fired twice"
    assert ticks == [ticks[0] + i for i in range(len(ticks))], "a tick was missed"
    assert sum(t >= all_up for t in ticks) >= 4  # about one a second
    assert all(t["schedule_id"] == "tick" for t in runs)
    assert statuses(runs) == {"completed": len(runs)}
    ran = [line for line in ticks_file.read_text().splitlines() if " " not in line]
    assert sorted(ran) == sorted(t["id"] for t in runs)  # each run executed once


def schedule_on(server: Server, schedule_id: str) -> httpx.Response:
    return httpx.get(f"{server.url}/schedules/{schedule_id}", timeout=10)


def test_a_schedule_made_on_one_host_is_seen_changed_and_deleted_on_the_others(
    instances: Instances, tmp_path: Path
) -> None:
    """Made on A, it shows on B and C; changed on B, A shows the change; every instance
    fires it, each tick once; deleted on C, no instance fires it again."""
    marks = tmp_path / "marks"
    a, b, c = instances(["a", "b", "c"])
    body = {"id": "shared", "task": "record", "params": {"path": str(marks), "mark": "x"}}
    made = httpx.post(f"{a.url}/schedules", json={**body, "every": 3600}, timeout=10)
    assert made.status_code == 201, made.text
    for server in (b, c):
        wait_until(
            lambda s=server: schedule_on(s, "shared").status_code == 200,
            timeout=10,
            what="the other instances to know it",
        )
    changed = httpx.patch(f"{b.url}/schedules/shared", json={"every": 1}, timeout=10)
    assert changed.status_code == 200, changed.text
    for server in (a, c):
        wait_until(
            lambda s=server: schedule_on(s, "shared").json()["every"] == 1,
            timeout=10,
            what="the change to reach every instance",
        )
    time.sleep(4)
    assert httpx.delete(f"{c.url}/schedules/shared", timeout=10).status_code == 204
    for server in (a, b):
        wait_until(
            lambda s=server: schedule_on(s, "shared").status_code == 404,
            timeout=10,
            what="the deletion to reach every instance",
        )
    wait_until(
        lambda: all(t["status"] in TERMINAL for t in listed(a, schedule_id="shared")),
        timeout=10,
        what="the last run to finish",
    )
    runs = listed(b, schedule_id="shared")
    ticks = sorted(timestamp(t["run_at"]) for t in runs)
    assert len(ticks) >= 3
    assert ticks == [ticks[0] + i for i in range(len(ticks))], "a tick fired twice or was missed"
    assert statuses(runs) == {"completed": len(runs)}
    time.sleep(2.5)
    assert len(listed(c, schedule_id="shared")) == len(runs)  # none after the deletion
    assert len(runs_of(marks)) == len(runs)  # each run executed once


def test_cancel_through_any_instance_stops_the_task_where_it_runs(
    instances: Instances,
) -> None:
    """A cancel stored by one instance reaches the instance running the task at once
    (NOTIFY), not after a lease or a poll."""
    a, b, c = instances(
        ["a", "b", "c"], env={"TASKS_WATCH_INTERVAL": "0.2"}, envs={"a": {"TASKS_CONCURRENCY": "1"}}
    )
    first = post(a, "hang")["id"]  # A runs it: it has a free slot
    wait_until(lambda: get(a, first)["status"] == "running", timeout=10, what="first running")
    second = post(a, "hang")["id"]  # A is full: B or C claims it, woken by NOTIFY
    wait_until(lambda: get(a, second)["status"] == "running", timeout=10, what="second running")
    assert running_count(a) == 1
    runner = b if running_count(b) == 1 else c
    bystander = c if runner is b else b
    assert running_count(runner) == 1 and running_count(bystander) == 0

    latencies = []
    for task_id, via in ((first, b), (second, bystander)):
        began = time.monotonic()
        response = httpx.post(f"{via.url}/tasks/{task_id}/cancel", timeout=10)
        assert response.status_code == 202, response.text
        wait_until(
            lambda t=task_id, v=via: get(v, t)["status"] == "cancelled",
            timeout=5,
            what="the cancel to reach the running instance",
        )
        latencies.append(time.monotonic() - began)
    print(
        f"\ncancel latency across instances: {', '.join(f'{s * 1000:.0f} ms' for s in latencies)}"
    )
    assert running_count(a) == 0 and running_count(runner) == 0
    for task_id in (first, second):
        task = get(c, task_id)
        assert task["status"] == "cancelled" and task["cancel_requested"] is True


def test_sigkill_of_one_instance_its_tasks_complete_on_another(
    instances: Instances, tmp_path: Path
) -> None:
    """Same host: the survivor sees the dead instance's pid is gone and reruns its tasks."""
    marks = tmp_path / "marks"
    a, b = instances(["a", "b"], env={"TASKS_CONCURRENCY": "2"})
    assert a.process is not None and b.process is not None
    a_pid, b_pid = str(a.process.pid), str(b.process.pid)
    params = {"path": str(marks), "seconds": 2}
    ids = {str(i): post(a, "record_pid", params={**params, "mark": str(i)})["id"] for i in range(6)}
    wait_until(lambda: len(runs_of(marks)) >= 4, timeout=10, what="A and B both running two")
    a.kill()
    victims = {mark for mark, pid in runs_of(marks) if pid == a_pid}
    assert victims, "A ran none of the tasks posted to it"

    wait_until(
        lambda: all(get(b, t)["status"] in TERMINAL for t in ids.values()),
        timeout=30,
        what="every task to finish on B",
    )
    runs = collections.defaultdict(list)
    for mark, pid in runs_of(marks):
        runs[mark].append(pid)
    for mark, task_id in ids.items():
        task = get(b, task_id)
        assert task["status"] == "completed", task
        if mark in victims:
            assert runs[mark] == [a_pid, b_pid] and task["attempts"] == 2, (runs[mark], task)
        else:
            assert runs[mark] == [b_pid] and task["attempts"] == 1, (runs[mark], task)


def test_sigkill_of_one_host_its_tasks_are_taken_back_after_the_lease(
    instances: Instances, tmp_path: Path, pg_url: str
) -> None:
    """Other hosts cannot see a pid: they take a host's tasks back only once its lease has
    run out, and never while it lives, however long its tasks run."""
    lease = 2.0
    marks = tmp_path / "marks"
    env = {"TASKS_LEASE_SECONDS": str(lease), "TASKS_CONCURRENCY": "4"}
    a, b, c = instances(
        ["a", "b", "c"], env=env, envs={"a": {"TASKS_CONCURRENCY": "2"}}, hosts=True
    )
    ids = {}
    for i, server in enumerate((a, a, b, b, c, c)):
        params = {"path": str(marks), "mark": str(i), "seconds": 4}
        ids[str(i)] = post(server, "record_host", params=params)["id"]
    wait_until(lambda: len(runs_of(marks)) == 6, timeout=10, what="all six running")
    # Every host keeps its tasks for longer than a lease while it lives.
    time.sleep(lease + 1)
    before_kill = runs_of(marks)
    assert len(before_kill) == 6, "a task of a living host was run twice"
    a.kill()
    killed_at = time.time()
    a_last_beat = last_heartbeats(pg_url)["host-a"]
    victims = {mark for mark, host, *_ in before_kill if host == "host-a"}
    assert victims, "host A ran none of the tasks posted to it"

    wait_until(
        lambda: all(get(b, t)["status"] in TERMINAL for t in ids.values()),
        timeout=30,
        what="every task to finish",
    )
    runs = collections.defaultdict(list)
    for mark, host, _, started in runs_of(marks):
        runs[mark].append((host, float(started)))
    delays = []
    for mark, task_id in ids.items():
        task = get(c, task_id)
        assert task["status"] == "completed", task
        hosts = [host for host, _ in runs[mark]]
        if mark not in victims:  # a living host's task: once, there
            assert len(hosts) == 1 and hosts != ["host-a"], runs[mark]
            assert task["attempts"] == 1, task
            continue
        assert len(hosts) == 2 and hosts[0] == "host-a", runs[mark]
        assert hosts[1] in ("host-b", "host-c"), runs[mark]
        assert task["attempts"] == 2, task
        rerun_at = runs[mark][1][1]
        assert rerun_at > killed_at  # never while A lived
        assert rerun_at >= a_last_beat + lease - 0.01  # only once its lease ran out
        delays.append(rerun_at - killed_at)
    print(
        f"\nhost A's tasks rerun {', '.join(f'{d:.2f}' for d in delays)} s after SIGKILL "
        f"(lease {lease:g} s, last heartbeat {killed_at - a_last_beat:.2f} s before)"
    )


@pytest.mark.parametrize("outage", ["restart", "kill"])
def test_postgres_restart_under_load_loses_nothing(
    instances: Instances, tmp_path: Path, postgres: PostgresServer, pg_url: str, outage: str
) -> None:
    """While clients post to two instances, PostgreSQL restarts (or is killed and started):
    meanwhile requests get 503 with a detail, never a 500 nor a hang; afterwards the instances
    recover by themselves and every task that got a 202 runs and completes."""
    marks = tmp_path / "marks"
    servers = instances(["a", "b"])
    accepted: dict[str, str] = {}  # task id -> mark
    refused: list[tuple[int, str, str]] = []  # status, content type, body
    hung: list[str] = []
    broken: list[str] = []
    health_seen: set[int] = set()
    stop = threading.Event()
    lock = threading.Lock()

    def client(number: int) -> None:
        with httpx.Client(timeout=10) as http:
            for i in itertools.count():
                if stop.is_set():
                    return
                server = servers[i % 2]
                mark = f"{number}-{i}"
                params = {"path": str(marks), "mark": mark, "seconds": 0.05}
                try:
                    response = http.post(
                        f"{server.url}/tasks", json={"name": "record", "params": params}
                    )
                except httpx.TimeoutException:
                    with lock:
                        hung.append(f"POST /tasks to instance {'ab'[i % 2]}")
                    continue
                except httpx.HTTPError as exc:
                    with lock:
                        broken.append(f"{type(exc).__name__}: {exc}")
                    continue
                with lock:
                    if response.status_code == 202:
                        accepted[response.json()["id"]] = mark
                    else:
                        kind = response.headers.get("content-type", "")
                        refused.append((response.status_code, kind, response.text))

    def watch_health() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                for server in servers:
                    with contextlib.suppress(httpx.HTTPError):
                        health_seen.add(http.get(f"{server.url}/health").status_code)
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    threads.append(threading.Thread(target=watch_health))
    for thread in threads:
        thread.start()
    recoveries: list[tuple[int, float]] = []  # tasks accepted after each outage, in how long
    try:
        wait_until(lambda: len(accepted) >= 100, timeout=20, what="load before the outage")
        for _ in range(2):  # twice: what goes wrong after an outage may not go wrong each time
            if outage == "restart":
                postgres.restart()
            else:
                postgres.kill()
                time.sleep(0.5)
                postgres.start()
            back, before = time.monotonic(), len(accepted)
            # Load goes on until the instances took 100 more, or 15 s.
            while len(accepted) < before + 100 and time.monotonic() - back < 15:
                time.sleep(0.05)
            recoveries.append((len(accepted) - before, time.monotonic() - back))
            if recoveries[-1][0] < 100:
                break
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    print(
        f"\n{outage}: {len(accepted)} accepted, after each outage "
        f"{', '.join(f'{n} in {s:.2f} s' for n, s in recoveries)}; {len(refused)} refused, "
        f"{len(hung)} hung, /health answers {sorted(health_seen)}"
    )
    # Every failure is listed, not only the first: one cause may show several ways.
    problems = []
    if hung:
        problems.append(f"{len(hung)} requests got no answer within 10 s: {hung[:4]}")
    if broken:
        problems.append(f"{len(broken)} requests failed: {broken[:4]}")
    if not refused:
        problems.append("no request got a 503: none met the outage")
    for status, kind, text in refused:
        if not (status == 503 and kind.startswith("application/json") and has_detail(text)):
            problems.append(f"a request got {status} {kind}: {text[:300]}")
            break
    for after, took in recoveries:
        if after < 100:
            problems.append(f"POST /tasks did not recover: {after} accepted in {took:.1f} s")
    if 500 in health_seen:
        problems.append("/health answered 500")
    for server, name in zip(servers, "ab", strict=True):
        with contextlib.suppress(AssertionError):
            wait_until(
                lambda s=server: httpx.get(f"{s.url}/health", timeout=10).status_code == 200,
                timeout=10,
            )
            continue
        problems.append(f"instance {name}: /health never 200 again")

    deadline = time.monotonic() + 15
    while unfinished(pg_url, servers) and time.monotonic() < deadline:
        time.sleep(0.2)
    stuck = unfinished(pg_url, servers)
    if stuck:
        problems.append(f"{len(stuck)} tasks never finished: {stuck[:4]}")
    tasks = {t["id"]: t for t in listed(servers[1], name="record")}
    missing = set(accepted) - set(tasks)
    if missing:
        problems.append(f"{len(missing)} accepted tasks lost: {sorted(missing)[:4]}")
    # Every stored task (a refused request may have stored its task anyway) completed...
    ended = statuses([t for t in tasks.values() if t["status"] in TERMINAL])
    if set(ended) - {"completed"}:
        problems.append(f"tasks ended {ended}")
    # ... and ran.
    not_run = set(accepted.values()) - {mark for (mark,) in runs_of(marks)}
    if not_run:
        problems.append(f"{len(not_run)} accepted tasks never ran")
    assert not problems, "\n".join(problems)
