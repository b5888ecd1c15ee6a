"""The SQL that every engine shares, written once, and the rows it reads and writes.

Statements are written in portable SQL with `?` placeholders; `Statements(dialect)` builds
them in one engine's spelling (its parameter style, its clock, its planner pins). What an
engine must say its own way (its claim, its schedule lock) it passes in.

Rules that decide a task's fate live here, once: a stored cancel wins over how an attempt
ended, a graceful release gives the task back unless a cancel was asked, a task whose
process died `MAX_INTERRUPTIONS` times is given up, and a schedule's tick fires once.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from tasks_service.models import (
    MAX_INTERRUPTIONS,
    TERMINAL_STATUSES,
    NewTask,
    StoredSchedule,
    Task,
    TaskEvent,
    TaskStatus,
    dump_json,
    new_id,
)

COLUMNS = (
    "id, name, params, status, progress, message, result, error, attempts, max_attempts, "
    "priority, created_at, run_at, started_at, finished_at, cancel_requested, schedule_id, "
    "timeout, owner, interruptions, released, lane, parent_id"
)
# The fields a change event records, in `task_events` order.
EVENT_FIELDS = (
    "task_id, status, progress, message, result, error, attempts, run_at, started_at, "
    "finished_at, cancel_requested"
)
# The columns whose change records an event (EVENT_FIELDS without task_id).
EVENT_COLUMNS = EVENT_FIELDS.removeprefix("task_id, ")

# The columns of a schedule made at runtime (models.StoredSchedule).
SCHEDULE_COLUMNS = (
    "id, task, params, every_seconds, cron, tz, paused, deleted, revision, trigger_set_at"
)
# The key of the engine's schedule lock, held to fire ticks and to change definitions. One
# key for both: a batch of writes that holds both could otherwise take them in the other
# order than another host's batch, and the two would deadlock.
SCHEDULES_LOCK = "schedules"

_TERMINAL_LIST = ", ".join(f"'{s.value}'" for s in sorted(TERMINAL_STATUSES))


@dataclass(frozen=True, slots=True)
class Dialect:
    """What one engine spells its own way in the statements every engine shares."""

    numbered_params: bool  # `$1, $2` (PostgreSQL) rather than `?` (SQLite)
    now: str  # the database's clock in Unix seconds, as an SQL expression
    pins_indexes: bool  # say `INDEXED BY` where the planner must not choose (SQLite)
    # How a claim's candidate rows are held off other claimers until its commit: nothing on
    # SQLite (one writer at a time), `FOR UPDATE SKIP LOCKED` on PostgreSQL (hosts never wait
    # on each other nor take the same task).
    claim_lock: str
    least: str  # the smallest of several values: min (SQLite), least (PostgreSQL)
    greatest: str
    # Taken before a claim that counts limits, so that two hosts' claims of limited lanes
    # take turns (None: the engine's writers already do).
    lock_limited_claims: str | None

    def prepare(self, sql: str) -> str:
        """`sql`, written with `?` placeholders, in this engine's spelling."""
        return _numbered(sql) if self.numbered_params else sql

    def indexed_by(self, index: str) -> str:
        return f"INDEXED BY {index}" if self.pins_indexes else ""


@lru_cache(maxsize=256)
def _numbered(sql: str) -> str:
    counter = itertools.count(1)
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


class Statements:
    """Every shared statement, built once per engine from its dialect.

    The guards of one-row writes by id compare with `IS NOT DISTINCT FROM` (neither side is
    ever NULL, so it means `=`): with a plain `status = 'running'` PostgreSQL's planner, misled
    by a young table's statistics, walked a partial index on status instead of the primary key,
    and each final write slowed from ~50 us to ~2 ms as the table grew.
    """

    def __init__(self, dialect: Dialect, *, lock_schedule: str | None) -> None:
        """`lock_schedule` takes a key (SCHEDULES_LOCK) and holds other processes' writes
        under the same key off until commit (None: the engine's writes never overlap)."""
        p, now, pin = dialect.prepare, dialect.now, dialect.indexed_by
        self.dialect = dialect
        self.lock_schedule = None if lock_schedule is None else p(lock_schedule)
        still, owned_by = "status IS NOT DISTINCT FROM", "owner IS NOT DISTINCT FROM"

        insert = (
            "INSERT INTO tasks (id, name, params, status, attempts, max_attempts, priority, "
            "created_at, run_at, started_at, schedule_id, timeout, owner, unique_key, "
            "request_hash, lane, parent_id) "
        )
        values = "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        key_taken = " ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING RETURNING id"
        self.insert = p(insert + values)
        self.insert_unique = p(insert + values + key_taken)
        self.by_unique_key = p(f"SELECT {COLUMNS}, request_hash FROM tasks WHERE unique_key = ?")
        self.schedule_states = p(
            "SELECT id, paused, last_fire_at, last_run_at, last_task_id FROM schedules"
        )
        self.schedule_state = p(
            "SELECT id, paused, last_fire_at, last_run_at, last_task_id FROM schedules WHERE id = ?"
        )
        self.set_paused = p(
            "INSERT INTO schedules (id, paused) VALUES (?, ?) "
            "ON CONFLICT (id) DO UPDATE SET paused = excluded.paused"
        )
        # Schedules made at runtime. Each change takes the next revision; the engine's
        # schedule lock (if any) is held first, so revisions are handed out in commit order
        # and a reader that saw revision n has seen every change before it.
        next_revision = "(SELECT coalesce(max(revision), 0) + 1 FROM schedules)"
        self.schedules_since = p(
            f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE revision > ? ORDER BY revision"
        )
        self.get_schedule = p(
            f"SELECT {SCHEDULE_COLUMNS} FROM schedules "
            "WHERE id = ? AND source = 'api' AND NOT deleted"
        )
        # A new one may take the place of a deleted one, or of the state of a schedule that
        # was in code once (whether one still is, the caller checked): never a live one.
        self.insert_schedule = p(
            "INSERT INTO schedules (id, source, task, params, every_seconds, cron, tz, paused, "
            "deleted, revision, trigger_set_at, last_fire_at, last_run_at, last_task_id) "
            f"VALUES (?, 'api', ?, ?, ?, ?, ?, ?, FALSE, {next_revision}, ?, ?, NULL, NULL) "
            "ON CONFLICT (id) DO UPDATE SET source = excluded.source, task = excluded.task, "
            "params = excluded.params, every_seconds = excluded.every_seconds, "
            "cron = excluded.cron, tz = excluded.tz, paused = excluded.paused, deleted = FALSE, "
            "revision = excluded.revision, trigger_set_at = excluded.trigger_set_at, "
            "last_fire_at = excluded.last_fire_at, last_run_at = NULL, last_task_id = NULL "
            "WHERE schedules.deleted OR schedules.source IS NULL RETURNING revision"
        )
        # Only from the revision the caller read: a change made in between is not overwritten.
        self.update_schedule = p(
            "UPDATE schedules SET params = ?, every_seconds = ?, cron = ?, tz = ?, "
            f"paused = coalesce(?, paused), revision = {next_revision}, trigger_set_at = ? "
            "WHERE id = ? AND source = 'api' AND NOT deleted AND revision = ? RETURNING revision"
        )
        self.delete_schedule = p(
            f"UPDATE schedules SET deleted = TRUE, task = NULL, params = NULL, "
            f"revision = {next_revision}, trigger_set_at = ? "
            "WHERE id = ? AND source = 'api' AND NOT deleted RETURNING revision"
        )
        self.get = p(f"SELECT {COLUMNS} FROM tasks WHERE id = ?")

        # A cancel stored before this write wins over how the attempt ended (even a success
        # that raced with it): once a cancel was accepted, the task ends cancelled, never retried.
        self.finish = p(
            "UPDATE tasks SET "
            "status = CASE WHEN cancel_requested THEN 'cancelled' ELSE CAST(? AS TEXT) END, "
            "result = CASE WHEN cancel_requested THEN NULL ELSE CAST(? AS TEXT) END, "
            "error = CASE WHEN cancel_requested THEN NULL ELSE CAST(? AS TEXT) END, "
            "finished_at = CASE WHEN cancel_requested THEN CAST(? AS DOUBLE PRECISION) "
            "  ELSE CAST(? AS DOUBLE PRECISION) END, "
            "run_at = CASE WHEN cancel_requested THEN run_at "
            "  ELSE coalesce(CAST(? AS DOUBLE PRECISION), run_at) END, "
            "ended_as = CAST(? AS TEXT) "
            f"WHERE id = ? AND {owned_by} ? AND {still} 'running'"
        )
        self.progress = p(
            f"UPDATE tasks SET progress = ?, message = ? WHERE id = ? AND {still} 'running'"
        )
        # A graceful shutdown gives the task back, unless its user asked for it to be cancelled.
        self.release = p(
            "UPDATE tasks SET released = released + 1, "
            "status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'pending' END, "
            "finished_at = CASE WHEN cancel_requested THEN CAST(? AS DOUBLE PRECISION) END "
            f"WHERE id = ? AND {owned_by} ? AND {still} 'running'"
        )
        self.unclaim = p(
            "UPDATE tasks SET status = 'pending', attempts = attempts - 1, "
            "started_at = CASE WHEN attempts = 1 THEN NULL ELSE started_at END "
            f"WHERE id = ? AND {owned_by} ? AND {still} 'running'"
        )
        self.cancel_pending = p(
            "UPDATE tasks SET status = 'cancelled', cancel_requested = TRUE, finished_at = ? "
            f"WHERE id = ? AND {still} 'pending' RETURNING {COLUMNS}"
        )
        self.request_cancel = p(
            "UPDATE tasks SET cancel_requested = TRUE "
            f"WHERE id = ? AND {still} 'running' RETURNING {COLUMNS}"
        )
        self.cancel_requests = p(
            "SELECT id FROM tasks WHERE owner = ? AND status = 'running' AND cancel_requested"
        )
        self.running_for = p(
            f"SELECT {COLUMNS} FROM tasks {pin('tasks_running')} "
            "WHERE owner = ? AND status = 'running'"
        )
        # The next pending task to come due (those already due wait for a slot or a lane).
        self.next_run_at = p(
            f"SELECT min(run_at) FROM tasks {pin('tasks_next_run')} "
            "WHERE status = 'pending' AND run_at > ?"
        )

        self.has_due_in_lanes = p(
            f"SELECT 1 FROM tasks {pin('tasks_lane_due')} "
            "WHERE status = 'pending' AND lane IS NOT NULL AND run_at <= ? LIMIT 1"
        )
        self.has_due = p(
            f"SELECT 1 FROM tasks {pin('tasks_next_run')} "
            "WHERE status = 'pending' AND run_at <= ? LIMIT 1"
        )

        # Tasks of a dead process: run again, or give up after repeated interruptions.
        gives_up = f"interruptions + 1 >= {MAX_INTERRUPTIONS}"
        self.recover = p(
            "UPDATE tasks SET interruptions = interruptions + 1, "
            f"status = CASE WHEN cancel_requested THEN 'cancelled' "
            f"  WHEN {gives_up} THEN 'failed' ELSE 'pending' END, "
            f"error = CASE WHEN cancel_requested THEN error "
            f"  WHEN {gives_up} THEN CAST(? AS TEXT) ELSE error END, "
            "finished_at = CASE WHEN cancel_requested "
            f"  OR {gives_up} THEN CAST(? AS DOUBLE PRECISION) END, "
            "run_at = ? "
            f"WHERE owner = ? AND status = 'running' RETURNING {COLUMNS}"
        )
        # Workers' times come from the database's clock, so hosts' clocks need not agree.
        self.register_worker = p(
            f"INSERT INTO workers (id, host, pid, pid_started, seen_at) VALUES (?, ?, ?, ?, {now}) "
            "ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, "
            "pid_started = excluded.pid_started, seen_at = excluded.seen_at"
        )
        self.heartbeat = p(f"UPDATE workers SET seen_at = {now} WHERE id = ? RETURNING id")
        self.workers = p(f"SELECT id, host, pid, pid_started, seen_at, {now} FROM workers")
        self.remove_worker = p("DELETE FROM workers WHERE id = ?")
        self.orphan_owners = p(
            f"SELECT DISTINCT owner FROM tasks {pin('tasks_running')} WHERE status = 'running' "
            "AND NOT EXISTS (SELECT 1 FROM workers WHERE workers.id = tasks.owner)"
        )
        self.ping = p("SELECT count(*) FROM workers")

        self.add_file = p(
            "INSERT INTO files (id, filename, size, sha256, created_at) VALUES (?, ?, ?, ?, ?)"
        )
        self.get_file = p("SELECT id, filename, size, sha256, created_at FROM files WHERE id = ?")
        self.files_created_before = p("SELECT id FROM files WHERE created_at < ?")
        # Ids are letters and digits only, so the LIKE pattern holds no wildcard of theirs.
        self.forget_file_unless_in_use = p(
            "DELETE FROM files WHERE id = ? AND NOT EXISTS (SELECT 1 FROM tasks "
            "WHERE status IN ('pending', 'running') AND params LIKE ?) RETURNING id"
        )

        # Task types: declarations as their processes state them, pauses, running counts.
        self.declare_type = p(
            "INSERT INTO task_types (name, process, concurrency, rate_count, rate_period, "
            "limit_key) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
            "process = excluded.process, concurrency = excluded.concurrency, "
            "rate_count = excluded.rate_count, rate_period = excluded.rate_period, "
            "limit_key = excluded.limit_key"
        )
        self.type_states = p(
            "SELECT name, process, concurrency, rate_count, rate_period, limit_key, paused "
            "FROM task_types"
        )
        self.set_type_paused = p(
            "INSERT INTO task_types (name, paused) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET paused = excluded.paused"
        )
        self.paused_types = p("SELECT name FROM task_types WHERE paused")
        self.running_by_name = p(
            f"SELECT name, count(*) FROM tasks {pin('tasks_by_status_name')} "
            "WHERE status = 'running' GROUP BY name"
        )
        # What holds a lane back: its running tasks, and its starts since a moment.
        self.lane_running = p(
            f"SELECT count(*) FROM tasks {pin('tasks_lane_running')} "
            "WHERE status = 'running' AND lane = ?"
        )
        self.lane_starts_since = p(
            "SELECT count(*) FROM lane_starts WHERE lane = ? AND started_at > ?"
        )
        self.prune_lane_starts = p(
            "DELETE FROM lane_starts WHERE started_at < ? - coalesce((SELECT y.rate_period "
            "FROM task_types y WHERE y.name = lane_starts.name), 0)"
        )
        self.forget_idle_lanes = p(
            "DELETE FROM lanes WHERE touched_at < ? "
            f"AND NOT EXISTS (SELECT 1 FROM tasks {pin('tasks_lane_due')} "
            "WHERE status = 'pending' AND lane = lanes.lane) "
            f"AND NOT EXISTS (SELECT 1 FROM tasks {pin('tasks_lane_running')} "
            "WHERE status = 'running' AND lane = lanes.lane)"
        )
        self.pending_of_type = p(
            f"SELECT id, params, lane FROM tasks {pin('tasks_by_status_name')} "
            "WHERE status = 'pending' AND name = ?"
        )
        self.set_lane = p(f"UPDATE tasks SET lane = ? WHERE id = ? AND {still} 'pending'")
        self.not_yet_due = p(
            "SELECT CASE WHEN attempts > 0 THEN 'retry' ELSE 'run_at' END, count(*) "
            f"FROM tasks {pin('tasks_next_run')} WHERE status = 'pending' AND run_at > ? "
            "GROUP BY CASE WHEN attempts > 0 THEN 'retry' ELSE 'run_at' END"
        )
        self.waiting_by_lane = p(
            "SELECT name, lane, count(*) FROM tasks "
            f"{pin('tasks_next_run')} WHERE status = 'pending' AND run_at <= ? "
            "GROUP BY name, lane"
        )

        self.task_counts = p("SELECT status, name, count(*) FROM tasks GROUP BY status, name")
        self.queue_stats = p(
            f"SELECT count(*), min(run_at) FROM tasks {pin('tasks_next_run')} "
            "WHERE status = 'pending' AND run_at <= ?"
        )
        self.add_metric_counts = p(
            "INSERT INTO metric_counts (metric, name, label, value) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (metric, name, label) "
            "DO UPDATE SET value = metric_counts.value + excluded.value"
        )
        self.metric_counts = p("SELECT metric, name, label, value FROM metric_counts")
        # A child goes only once its parent has ended: a re-run of the parent needs it.
        self.purge = p(
            f"DELETE FROM tasks WHERE id IN (SELECT id FROM tasks {pin('tasks_finished')} "
            f"WHERE finished_at < ? AND status IN ({_TERMINAL_LIST}) AND (parent_id IS NULL "
            "OR NOT EXISTS (SELECT 1 FROM tasks parent WHERE parent.id = tasks.parent_id "
            "AND parent.status IN ('pending', 'running'))) LIMIT ?) RETURNING id"
        )
        # The last hours at a glance (runtime.stats): the per-minute counts the finishes
        # and the engines' triggers wrote, and the queue depth the watchers sample.
        self.stats_clock = p(
            f"SELECT {now}, (SELECT sampled_at FROM stats_depth ORDER BY minute DESC LIMIT 1)"
        )
        # Everything from a minute on, in one trip: counts (kind 0), depth samples (kind 1),
        # and the database's clock (kind 2).
        self.stats_since = p(
            "SELECT 0, minute, name, outcome, bucket, sum(n) FROM stats_minutes "
            "WHERE minute >= ? GROUP BY minute, name, outcome, bucket "
            "UNION ALL SELECT 1, minute, NULL, NULL, depth, NULL FROM stats_depth "
            f"WHERE minute >= ? UNION ALL SELECT 2, {now}, NULL, NULL, NULL, NULL"
        )
        self.depth_before = p(
            "SELECT depth FROM stats_depth WHERE minute < ? ORDER BY minute DESC LIMIT 1"
        )
        self.record_depth = p(
            "INSERT INTO stats_depth (minute, depth, sampled_at) VALUES (?, ?, ?) "
            "ON CONFLICT (minute) DO UPDATE SET depth = excluded.depth, "
            "sampled_at = excluded.sampled_at WHERE stats_depth.sampled_at < excluded.sampled_at"
        )
        # A batch's finishes, counted by their process (group_commit.EndedCounts).
        self.add_ended = p(
            "INSERT INTO stats_minutes (minute, name, outcome, bucket, shard, n) "
            f"VALUES ({minute_now(dialect)}, ?, ?, ?, ?, ?) "
            "ON CONFLICT (minute, name, outcome, bucket, shard) "
            "DO UPDATE SET n = stats_minutes.n + excluded.n"
        )
        self.purge_stats = p("DELETE FROM stats_minutes WHERE minute < ?")
        self.purge_depth = p("DELETE FROM stats_depth WHERE minute < ?")
        self.unfinished_children = p(
            f"SELECT id, status FROM tasks {pin('tasks_by_parent')} WHERE parent_id = ? "
            "AND status IN ('pending', 'running')"
        )


def minute_now(dialect: Dialect) -> str:
    """The start of the database clock's current minute (Unix seconds), as SQL."""
    return f"CAST(floor(({dialect.now}) / 60) AS BIGINT) * 60"


# -- rows and records ------------------------------------------------------------------------


_INSERTED = (
    "id, name, params, status, attempts, max_attempts, priority, created_at, run_at, "
    "started_at, schedule_id, timeout, owner, unique_key, request_hash, lane, parent_id"
)
_INSERTED_TYPES = (
    "TEXT, TEXT, TEXT, TEXT, INTEGER, INTEGER, INTEGER, DOUBLE PRECISION, DOUBLE PRECISION, "
    "DOUBLE PRECISION, TEXT, DOUBLE PRECISION, TEXT, TEXT, TEXT, TEXT, TEXT"
)


def _typed_row(types: str) -> str:
    """One VALUES row of `?`s, each cast (PostgreSQL cannot tell a bare parameter's type)."""
    return "(" + ", ".join(f"CAST(? AS {kind.strip()})" for kind in types.split(",")) + ")"


@lru_cache(maxsize=64)
def tick_statements(dialect: Dialect, rows: int) -> tuple[str, str]:
    """The insert of `rows` schedules' runs, each for one tick, and the record of those ticks.

    Insert parameters per row: a task row as `new_task_row` gives it, then the revision of
    the schedule the caller fired (0: one defined in code). A row is left out when its tick
    was already made (its unique key), while an earlier run of its schedule is pending or
    running, or when its schedule is paused; one made at runtime also when it was deleted
    or changed since that revision, so a process that has yet to hear of a change never
    fires the old definition. Record parameters per row: schedule id, tick, unique key.
    """
    # The active runs are found in their own small index, not among every run of the schedule.
    values = ", ".join([_typed_row(f"{_INSERTED_TYPES}, INTEGER")] * rows)
    inserted = ", ".join(f"v.{column.strip()}" for column in _INSERTED.split(","))
    insert = (
        f"WITH v ({_INSERTED}, revision) AS (VALUES {values}) "
        f"INSERT INTO tasks ({_INSERTED}) SELECT {inserted} FROM v "
        "LEFT JOIN schedules s ON s.id = v.schedule_id "
        f"WHERE NOT EXISTS (SELECT 1 FROM tasks t {dialect.indexed_by('tasks_active_by_schedule')} "
        "WHERE t.schedule_id = v.schedule_id "
        "AND t.status IN ('pending', 'running') AND t.schedule_id IS NOT NULL) "
        "AND ((v.revision = 0 AND (s.id IS NULL OR NOT s.paused)) "
        "OR (v.revision > 0 AND s.revision = v.revision AND NOT s.paused AND NOT s.deleted)) "
        "ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING RETURNING id"
    )
    ticks = ", ".join([_typed_row("TEXT, DOUBLE PRECISION, TEXT")] * rows)
    # The latest run is the task that holds a tick's key, whichever process inserted it.
    newer = (
        "excluded.last_task_id IS NOT NULL AND (schedules.last_run_at IS NULL "
        "OR schedules.last_run_at <= excluded.last_run_at)"
    )
    record = (
        f"WITH v (id, tick, unique_key) AS (VALUES {ticks}) "
        "INSERT INTO schedules (id, last_fire_at, last_run_at, last_task_id) "
        "SELECT v.id, v.tick, CASE WHEN k.id IS NULL THEN NULL ELSE v.tick END, k.id FROM v "
        "LEFT JOIN tasks k ON k.unique_key = v.unique_key AND k.unique_key IS NOT NULL "
        "WHERE TRUE ON CONFLICT (id) DO UPDATE SET "
        "last_fire_at = CASE WHEN schedules.last_fire_at IS NULL "
        "  OR schedules.last_fire_at < excluded.last_fire_at "
        "  THEN excluded.last_fire_at ELSE schedules.last_fire_at END, "
        f"last_run_at = CASE WHEN {newer} THEN excluded.last_run_at "
        "  ELSE schedules.last_run_at END, "
        f"last_task_id = CASE WHEN {newer} THEN excluded.last_task_id "
        "  ELSE schedules.last_task_id END"
    )
    return dialect.prepare(insert), dialect.prepare(record)


def new_task_row(new: NewTask, claim_for: str | None) -> tuple[Task, tuple[Any, ...]]:
    """The task as it will be stored, and the values of its INSERT."""
    task_id, created_at = new_id()
    run_at = created_at if new.run_at is None else new.run_at
    status = TaskStatus.RUNNING if claim_for else TaskStatus.PENDING
    started_at = created_at if claim_for else None
    attempts = 1 if claim_for else 0
    params = (
        task_id,
        new.name,
        dump_json(new.params),
        status.value,
        attempts,
        new.max_attempts,
        new.priority,
        created_at,
        run_at,
        started_at,
        new.schedule_id,
        new.timeout,
        claim_for,
        new.unique_key,
        new.request_hash,
        new.lane,
        new.parent_id,
    )
    task = Task(
        id=task_id,
        name=new.name,
        params=new.params,
        status=status,
        progress=None,
        message=None,
        result=None,
        error=None,
        attempts=attempts,
        max_attempts=new.max_attempts,
        priority=new.priority,
        created_at=created_at,
        run_at=run_at,
        started_at=started_at,
        finished_at=None,
        cancel_requested=False,
        schedule_id=new.schedule_id,
        timeout=new.timeout,
        owner=claim_for,
        lane=new.lane,
        parent_id=new.parent_id,
    )
    return task, params


def event_from_row(row: Sequence[Any]) -> TaskEvent:
    return TaskEvent(
        seq=row[0],
        task_id=row[1],
        status=TaskStatus(row[2]),
        progress=None if row[3] is None else float(row[3]),
        message=row[4],
        result=None if row[5] is None else json.loads(row[5]),
        error=row[6],
        attempts=row[7],
        run_at=row[8],
        started_at=row[9],
        finished_at=row[10],
        cancel_requested=bool(row[11]),
    )


def schedule_from_row(row: Sequence[Any]) -> StoredSchedule:
    return StoredSchedule(
        id=row[0],
        task=row[1],
        params={} if row[2] is None else json.loads(row[2]),
        every=row[3],
        cron=row[4],
        tz=row[5],
        paused=bool(row[6]),
        deleted=bool(row[7]),
        revision=int(row[8]),
        trigger_set_at=row[9] or 0.0,
    )


def task_from_row(row: Sequence[Any]) -> Task:
    return Task(
        id=row[0],
        name=row[1],
        params=json.loads(row[2]),
        status=TaskStatus(row[3]),
        progress=None if row[4] is None else float(row[4]),
        message=row[5],
        result=None if row[6] is None else json.loads(row[6]),
        error=row[7],
        attempts=row[8],
        max_attempts=row[9],
        priority=row[10],
        created_at=row[11],
        run_at=row[12],
        started_at=row[13],
        finished_at=row[14],
        cancel_requested=bool(row[15]),
        schedule_id=row[16],
        timeout=row[17],
        owner=row[18],
        interruptions=row[19],
        released=row[20],
        lane=row[21],
        parent_id=row[22],
    )
