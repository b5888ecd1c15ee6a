"""The claim: which due tasks a process takes next, in one statement, limits and all.

Plain tasks (no lane) come from one index. The others sit in lanes, each read from an index
by lane under its own cap, so a full lane never makes the claim walk past its waiting
tasks and never holds other types up:

- an unlimited process type's lane, under the process's free worker-process slots;
- an unkeyed limited type's lane (concurrency, rate_limit), under what its limits allow now;
- a keyed limited type's lanes (one per `limit_key` value, listed in `lanes`), one task from
  each lane whose limits allow another start.

Limits are counted in the same statement from what is stored (running tasks by lane, recent
starts in `lane_starts`), so they hold across processes and hosts; the store's engine makes
concurrent claims of limited lanes take turns (PostgreSQL: an advisory lock; SQLite: one
writer at a time). A paused type's tasks are never claimed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from tasks_service.sql import COLUMNS, Dialect

ORDER = "ORDER BY priority DESC, run_at, id"


@dataclass(frozen=True, slots=True)
class ClaimPlan:
    """What one process may take: `limit` tasks in all, `process_limit` of them in worker
    processes, from the lanes of the types it knows."""

    limit: int
    process_limit: int = 0
    process_lanes: tuple[str, ...] = ()  # unlimited process types (lane = name)
    limited: tuple[str, ...] = ()  # unkeyed limited types, not in processes
    limited_process: tuple[str, ...] = ()  # unkeyed limited process types
    keyed: tuple[str, ...] = ()  # keyed limited types, not in processes
    keyed_process: tuple[str, ...] = ()  # keyed limited process types
    shape: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        shape = (
            len(self.process_lanes) if self.process_limit else 0,
            len(self.limited),
            len(self.limited_process) if self.process_limit else 0,
            len(self.keyed),
            len(self.keyed_process) if self.process_limit else 0,
        )
        object.__setattr__(self, "shape", shape)

    @property
    def has_limits(self) -> bool:
        _, limited, limited_process, keyed, keyed_process = self.shape
        return bool(limited or limited_process or keyed or keyed_process)


def claim_query(dialect: Dialect, plan: ClaimPlan, owner: str, now: float) -> tuple[str, list[Any]]:
    """The claim's statement (built once per shape) and its parameters, in order."""
    sql = _claim_statement(dialect, plan.shape)
    params: list[Any] = [owner, now, now, plan.limit]
    process_lanes, limited, limited_process, keyed, keyed_process = plan.shape
    for name in plan.limited[:limited]:
        params.extend(_capacity_params(name, plan.limit, now))
    if keyed:
        params.extend((now, *plan.keyed, now))
    if process_lanes or limited_process or keyed_process:
        for name in plan.process_lanes[:process_lanes]:
            params.extend((name, now, name, plan.process_limit))
        for name in plan.limited_process[:limited_process]:
            params.extend(_capacity_params(name, plan.process_limit, now))
        if keyed_process:
            params.extend((now, *plan.keyed_process, now))
        params.append(plan.process_limit)
    if any(plan.shape):
        params.append(plan.limit)
    return sql, params


def _capacity_params(name: str, cap: int, now: float) -> tuple[Any, ...]:
    """A limited lane's probe: its lane and now, then what its capacity reads (see below)."""
    return (name, now, cap, name, cap, name, now, cap, name)


@lru_cache(maxsize=128)
def _claim_statement(dialect: Dialect, shape: tuple[int, ...]) -> str:
    pin, lock = dialect.indexed_by, dialect.claim_lock
    least, greatest = dialect.least, dialect.greatest
    update = (
        "UPDATE tasks SET status = 'running', owner = ?, attempts = attempts + 1, "
        "started_at = ? WHERE id IN "
    )
    not_paused = "NOT EXISTS (SELECT 1 FROM task_types y WHERE y.name = tasks.name AND y.paused)"
    plain = (
        f"SELECT id, priority, run_at FROM tasks {pin('tasks_due')} WHERE status = 'pending' "
        f"AND lane IS NULL AND run_at <= ? AND {not_paused} {ORDER} LIMIT ? {lock}"
    )
    if not any(shape):  # the common case: plain tasks only, straight from their index
        only_ids = plain.replace("id, priority, run_at", "id", 1)
        return dialect.prepare(f"{update}({only_ids}) RETURNING {COLUMNS}")

    def lane_probe(limit: str) -> str:
        return (
            f"SELECT id, priority, run_at FROM (SELECT id, priority, run_at FROM tasks "
            f"{pin('tasks_lane_due')} WHERE status = 'pending' AND lane = ? AND run_at <= ? "
            f"{ORDER} LIMIT {limit} {lock}) probe"
        )

    running = (
        f"(SELECT count(*) FROM tasks {pin('tasks_lane_running')} "
        "WHERE status = 'running' AND lane = {lane})"
    )
    recent = (
        "(SELECT count(*) FROM lane_starts s WHERE s.lane = {lane} "
        "AND s.started_at > CAST(? AS DOUBLE PRECISION) - y.rate_period)"
    )
    # What an unkeyed limited lane (lane = type name) allows now, within the group's cap.
    cap = "CAST(? AS INTEGER)"
    room_to_run = f"coalesce(y.concurrency - {running.format(lane='?')}, {cap})"
    room_to_start = f"coalesce(y.rate_count - {recent.format(lane='?')}, {cap})"
    capacity = (
        "coalesce((SELECT CASE WHEN y.paused THEN 0 ELSE "
        f"{greatest}(0, {least}({cap}, {room_to_run}, {room_to_start})) END "
        "FROM task_types y WHERE y.name = ?), 0)"
    )
    unlimited_process = lane_probe(
        "(CASE WHEN EXISTS (SELECT 1 FROM task_types y WHERE y.name = ? AND y.paused) "
        "THEN 0 ELSE CAST(? AS INTEGER) END)"
    )

    def keyed_heads(count: int, process: bool) -> str:
        names = ", ".join("?" * count)
        head = (
            f"(SELECT id FROM tasks {pin('tasks_lane_due')} WHERE status = 'pending' "
            f"AND lane = l.lane AND run_at <= ? {ORDER} LIMIT 1 {lock})"
        )
        return (
            f"SELECT h.id, h.priority, h.run_at FROM (SELECT {head} AS head FROM lanes l "
            f"JOIN task_types y ON y.name = l.name WHERE l.name IN ({names}) "
            f"AND y.process = {'TRUE' if process else 'FALSE'} AND NOT y.paused "
            f"AND (y.concurrency IS NULL OR {running.format(lane='l.lane')} < y.concurrency) "
            f"AND (y.rate_count IS NULL OR {recent.format(lane='l.lane')} < y.rate_count)"
            ") heads JOIN tasks h ON h.id = heads.head"
        )

    process_lanes, limited, limited_process, keyed, keyed_process = shape
    branches = [f"SELECT id, priority, run_at FROM ({plain}) plain"]
    branches += [lane_probe(capacity) for _ in range(limited)]
    if keyed:
        branches.append(keyed_heads(keyed, process=False))
    in_processes = [unlimited_process] * process_lanes
    in_processes += [lane_probe(capacity)] * limited_process
    if keyed_process:
        in_processes.append(keyed_heads(keyed_process, process=True))
    if in_processes:
        grouped = " UNION ALL ".join(in_processes)
        branches.append(f"SELECT id, priority, run_at FROM ({grouped} {ORDER} LIMIT ?) processes")
    candidates = " UNION ALL ".join(branches)
    return dialect.prepare(
        f"{update}(SELECT id FROM ({candidates}) candidates {ORDER} LIMIT ?) RETURNING {COLUMNS}"
    )
