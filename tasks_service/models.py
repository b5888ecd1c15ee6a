"""The task record, its statuses and the domain errors (stdlib only)."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
ACTIVE_STATUSES = frozenset({TaskStatus.PENDING, TaskStatus.RUNNING})

# A task whose process died this many times while running it is given up on.
MAX_INTERRUPTIONS = 3


@dataclass(slots=True)
class Task:
    """One task as stored. Times are Unix seconds; `to_json` gives SPEC.md's shape."""

    id: str
    name: str
    params: dict[str, Any]
    status: TaskStatus
    progress: float | None
    message: str | None
    result: Any
    error: str | None
    attempts: int
    max_attempts: int
    priority: int
    created_at: float
    run_at: float
    started_at: float | None
    finished_at: float | None
    cancel_requested: bool
    schedule_id: str | None
    timeout: float | None = None
    owner: str | None = None
    interruptions: int = 0
    released: int = 0
    # Where the claim finds it: None for plain tasks (one index for all of them), else the
    # lane of its type (process tasks: each attempt takes a process slot).
    lane: str | None = None
    parent_id: str | None = None  # the task that started it with ctx.run, map or start
    event_seq: int | None = None  # set on snapshots rebuilt from a change event
    waiting_for: str | None = None  # why it has not started, when asked (runtime.waits)

    @property
    def counted_attempts(self) -> int:
        """Starts held against max_attempts: crashes and graceful shutdowns are not."""
        return self.attempts - self.interruptions - self.released

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "params": self.params,
            "status": self.status.value,
            "progress": self.progress,
            "message": self.message,
            "result": self.result,
            "error": self.error,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "priority": self.priority,
            "created_at": (created := iso(self.created_at)),
            "run_at": created if self.run_at == self.created_at else iso(self.run_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "cancel_requested": self.cancel_requested,
            "schedule_id": self.schedule_id,
            "parent_id": self.parent_id,
            "waiting_for": self.waiting_for,
        }


@dataclass(slots=True)
class TaskRequest:
    """What a caller asks for: a task type, its params, and how to run it.

    The one shape of the task options, whether they come from `POST /tasks`, a retry or
    Python: everything but `name` is optional. The service validates it into a `NewTask`.
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    delay: float | None = None  # seconds from now; or `run_at`, not both
    run_at: datetime | None = None  # with a time zone
    max_attempts: int | None = None  # None: the task type's own
    timeout: float | None = None  # seconds per attempt; None: the task type's own
    idempotency_key: str | None = None  # a second request with the key gets the first task
    request_hash: str | None = None  # what the key's first request was, to tell a reuse


@dataclass(slots=True)
class NewTask:
    """A validated request to create a task; `params` are already JSON-ready."""

    name: str
    params: dict[str, Any]
    priority: int = 0
    run_at: float | None = None
    max_attempts: int = 1
    timeout: float | None = None
    schedule_id: str | None = None
    # At most one task holds a unique key: an Idempotency-Key, or a schedule's tick.
    unique_key: str | None = None
    request_hash: str | None = None
    lane: str | None = None  # see Task.lane
    parent_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredSchedule:
    """A schedule made at runtime (HTTP or the Python API) as the database keeps it.

    `revision` numbers its every change, in commit order across all processes; a deleted
    one stays behind as a tombstone (`deleted`, no task) so that every process hears of it.
    """

    id: str
    task: str | None
    params: dict[str, Any]
    every: float | None
    cron: str | None
    tz: str | None
    paused: bool
    deleted: bool
    revision: int
    trigger_set_at: float  # made, or its trigger changed, then: earlier ticks are not its own


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What the database knows of any schedule's runs, whether defined in code or not."""

    paused: bool = False
    last_fire_at: float | None = None  # the latest tick handled (fired, or skipped)
    last_run_at: float | None = None  # the tick of the latest task a tick created
    last_task_id: str | None = None


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """A schedule as the API shows it; `to_json` gives SPEC.md's shape."""

    id: str
    task: str
    params: dict[str, Any]
    trigger: str
    every: float | None
    cron: str | None
    tz: str | None
    next_run_at: float | None
    paused: bool
    source: str  # "code" or "api"
    last_run_at: float | None
    last_task_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "task": self.task,
            "params": self.params,
            "trigger": self.trigger,
            "every": self.every,
            "cron": self.cron,
            "tz": self.tz,
            "next_run_at": iso(self.next_run_at),
            "paused": self.paused,
            "source": self.source,
            "last_run_at": iso(self.last_run_at),
            "last_task_id": self.last_task_id,
        }


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A process that runs tasks, as it last reported itself."""

    id: str
    host: str  # the machine (and its boot), see runtime.liveness.this_host
    pid: int
    pid_started: str
    seen_at: float


@dataclass(frozen=True, slots=True)
class FileRecord:
    """An uploaded file's metadata; the bytes live under TASKS_DATA_DIR, named by `id`."""

    id: str
    filename: str
    size: int
    sha256: str
    created_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "filename": self.filename,
            "size": self.size,
            "sha256": self.sha256,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """A task's changing fields right after one committed change."""

    seq: int
    task_id: str
    status: TaskStatus
    progress: float | None
    message: str | None
    result: Any
    error: str | None
    attempts: int
    run_at: float | None
    started_at: float | None
    finished_at: float | None
    cancel_requested: bool

    def applied_to(self, task: Task) -> Task:
        """`task` (for the fields that never change) as it was after this change."""
        return replace(
            task,
            status=self.status,
            progress=self.progress,
            message=self.message,
            result=self.result,
            error=self.error,
            attempts=self.attempts,
            run_at=self.run_at if self.run_at is not None else task.run_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            cancel_requested=self.cancel_requested,
            event_seq=self.seq,
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, as the runner decided it."""

    status: TaskStatus
    result_json: str | None = None
    error: str | None = None
    retry_at: float | None = None  # set with status PENDING: wait for a retry


@dataclass(frozen=True, slots=True)
class TypeState:
    """A task type as the store knows it: its declaration (as its processes last stated it)
    and whether it is paused."""

    name: str
    process: bool = False
    concurrency: int | None = None
    rate_count: int | None = None
    rate_period: float | None = None
    limit_key: str | None = None
    paused: bool = False

    def same_declaration(self, other: TypeState) -> bool:
        return (self.process, self.concurrency, self.rate_count, self.rate_period,
                self.limit_key) == (other.process, other.concurrency, other.rate_count,
                other.rate_period, other.limit_key)  # fmt: skip


# One encoder for every dump: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def dump_json(value: Any) -> str:
    """Compact JSON; NaN and infinities are refused, as JSON has no such numbers."""
    if value == {} and type(value) is dict:  # the params of many tasks
        return "{}"
    return _ENCODER.encode(value)


_second_shown: tuple[int, str] = (0, "1970-01-01T00:00:00")


def iso(timestamp: float | None) -> str | None:
    """ISO 8601 UTC to the microsecond (`2026-12-01T08:30:00.123456Z`). Every task's JSON
    has several: the date and time of the last second shown are kept and reused."""
    global _second_shown
    if timestamp is None:
        return None
    second, micros = divmod(round(timestamp * 1_000_000), 1_000_000)
    shown = _second_shown
    if shown[0] != second:
        shown = _second_shown = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{shown[1]}.{micros:06d}Z"


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Two letters for each 10 bits: 13 lookups make an id (base64.b32encode is plain Python in
# 3.11, and three times slower).
_PAIRS = [first + second for first in _CROCKFORD for second in _CROCKFORD]
_SHIFTS = tuple(range(120, -1, -10))
_id_lock = threading.Lock()
_last_micros = 0
_ID_LENGTH = 26


def new_id() -> tuple[str, float]:
    """A 26-character id (of a task or an upload) that sorts by creation time, and that time.

    52 bits of microseconds since the epoch, then 78 random bits. Within a process the
    microseconds strictly increase, so ids never tie and sort exactly as they were made.
    """
    global _last_micros
    with _id_lock:
        micros = max(time.time_ns() // 1000, _last_micros + 1)
        _last_micros = micros
    value = (micros << 78) | random.getrandbits(78)
    return "".join([_PAIRS[(value >> shift) & 0x3FF] for shift in _SHIFTS]), micros / 1_000_000


def is_id(text: str) -> bool:
    """Whether `text` could be an id `new_id` made (letters and digits only: safe in paths)."""
    return len(text) == _ID_LENGTH and all(c in _CROCKFORD for c in text)


def _reseed_after_fork() -> None:
    random.seed(os.urandom(16))


os.register_at_fork(after_in_child=_reseed_after_fork)


class TaskError(Exception):
    """Base of the errors the service reports to its callers."""


class TaskNotFound(TaskError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"no task with id {task_id!r}")
        self.task_id = task_id


class TaskTypeNotFound(TaskError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no task type {name!r}; known types: {', '.join(known) or '(none)'}")


class ScheduleNotFound(TaskError):
    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"no schedule with id {schedule_id!r}")


class ScheduleExists(TaskError):
    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"a schedule with id {schedule_id!r} already exists")


class ScheduleInCode(TaskError):
    """Schedules defined in code change with the code: over the API they are only paused,
    resumed and run."""

    def __init__(self, schedule_id: str, action: str) -> None:
        super().__init__(
            f"cannot {action} schedule {schedule_id!r}: it is defined in code "
            "(only pause, resume and run apply to it)"
        )


class UnknownTaskType(TaskError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"unknown task type {name!r}; known types: {', '.join(known) or '(none)'}")
        self.name = name
        self.known = known


class InvalidParams(TaskError):
    """Params that fail validation; `errors` are pydantic's error dicts, JSON-ready."""

    def __init__(self, name: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"invalid params for task type {name!r}")
        self.errors = errors


class InvalidRequest(TaskError):
    """A request that contradicts itself or the service (e.g. delay and run_at together)."""


class InvalidBatchItem(TaskError):
    """One item of a batch is invalid (so nothing of the batch is stored)."""

    def __init__(self, index: int, error: TaskError) -> None:
        super().__init__(f"tasks[{index}]: {error}")
        self.index = index
        self.error = error


class InvalidSchedule(InvalidRequest):
    """A schedule definition that cannot be used; `field` names the field at fault (None:
    the fields together, e.g. both `cron` and `every`)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field


class InvalidTransition(TaskError):
    def __init__(self, task: Task, action: str) -> None:
        super().__init__(f"cannot {action} task {task.id}: it is {task.status.value}")
        self.task = task


class IdempotencyConflict(TaskError):
    def __init__(self, task_id: str) -> None:
        super().__init__(
            f"this Idempotency-Key was already used, with a different request body, "
            f"for task {task_id}"
        )


class Rows(list):  # type: ignore[type-arg]
    """In the steps of an atomic write: many rows of parameters for one statement."""


class KeyTaken(Exception):
    """An atomic write met a unique key that another write holds: none of it committed."""


class StoreUnavailable(TaskError):
    """The database cannot be used right now (disk full, locked too long, gone)."""
