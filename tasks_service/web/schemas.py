"""Request and response schemas of the HTTP API (what /openapi.json documents)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, model_validator

from tasks.schedules import MAX_CRON_LENGTH, MAX_EVERY
from tasks_service.models import TaskRequest, TaskStatus
from tasks_service.schedules import ID_PATTERN

WaitingFor = Literal["run_at", "retry", "paused", "concurrency", "rate_limit", "slot"]

# Models that routes refer to by `$ref` themselves (error answers, a body read by hand);
# tasks_service.web.openapi puts their schemas in the document's components.
_REFERENCED: dict[str, type[BaseModel]] = {}


def component(model: type[BaseModel]) -> dict[str, str]:
    """A `$ref` to `model`'s schema among the document's components (it will be there)."""
    _REFERENCED[model.__name__] = model
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def referenced_models() -> list[type[BaseModel]]:
    return list(_REFERENCED.values())


class TaskCreate(BaseModel):
    """The body of POST /tasks."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, max_length=200, description="a registered task type")
    params: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(0, ge=-1_000_000, le=1_000_000, description="higher runs first")
    delay: float | None = Field(None, ge=0, le=10 * 365 * 86400, description="seconds")
    run_at: AwareDatetime | None = Field(None, description="ISO 8601 with a time zone")
    max_attempts: int | None = Field(None, ge=1, le=1000)
    timeout: float | None = Field(None, gt=0, le=30 * 86400, description="seconds per attempt")

    @model_validator(mode="after")
    def _one_start_time(self) -> TaskCreate:
        if self.delay is not None and self.run_at is not None:
            raise ValueError("give delay or run_at, not both")
        return self

    def as_request(
        self, *, idempotency_key: str | None = None, request_hash: str | None = None
    ) -> TaskRequest:
        return TaskRequest(
            self.name,
            self.params,
            priority=self.priority,
            delay=self.delay,
            run_at=self.run_at,
            max_attempts=self.max_attempts,
            timeout=self.timeout,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )


class TaskBatchItem(TaskCreate):
    """One task of POST /tasks/batch: a POST /tasks body, with its own idempotency key."""

    idempotency_key: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="as the Idempotency-Key header of POST /tasks (the same keys)",
    )


class TaskBatch(BaseModel):
    """The body of POST /tasks/batch: all of them are stored, or none."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskBatchItem] = Field(min_length=1, max_length=1000)


class TaskOut(BaseModel):
    """A task, as every endpoint that returns one shows it."""

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
    created_at: str
    run_at: str | None
    started_at: str | None
    finished_at: str | None
    cancel_requested: bool
    schedule_id: str | None
    parent_id: str | None = Field(description="the task that started it (ctx.run, map, start)")
    waiting_for: WaitingFor | None = Field(
        description="for a pending task, why it has not started; null otherwise"
    )


class TaskBatchOut(BaseModel):
    items: list[TaskOut]


class TaskPage(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None


class TaskType(BaseModel):
    name: str
    description: str
    params_schema: dict[str, Any]
    max_attempts: int
    timeout: float | None
    schedule: str | None
    process: bool = Field(description="each attempt runs in a worker process of its own")
    concurrency: int | None = Field(description="most running at once, anywhere (per key)")
    rate_limit: str | None = Field(description='most starts per period, e.g. "10/m" (per key)')
    limit_key: str | None = Field(description="the param whose each value has its own limits")
    paused: bool = Field(description="none of its pending tasks starts while paused")
    running: int = Field(description="tasks of this type running now, in every process")


class ScheduleOut(BaseModel):
    """A schedule, whether defined in code or made at runtime."""

    id: str
    task: str
    params: dict[str, Any]
    trigger: str = Field(description='e.g. "every 60 s", "cron \'0 2 * * *\' (UTC)"')
    every: float | None = Field(description="seconds, for an interval schedule")
    cron: str | None = Field(description="the crontab expression of a cron schedule")
    tz: str | None = Field(description="the zone a cron schedule is read in")
    next_run_at: str | None
    paused: bool
    source: Literal["code", "api"] = Field(description="defined in code, or made over the API")
    last_run_at: str | None = Field(description="the tick of the latest run a tick created")
    last_task_id: str | None = Field(description="the latest task a tick created")


# The trigger fields of a schedule made at runtime; they are checked further (the cron
# expression by APScheduler, the zone against the IANA database) by the scheduler itself.
_Every = Annotated[
    float,
    Field(strict=True, ge=1, le=MAX_EVERY, description="seconds; ticks aligned to the epoch"),
]
_Cron = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_CRON_LENGTH,
        description="crontab: minute hour day month weekday (Sunday = 0)",
    ),
]
_Tz = Annotated[str, Field(min_length=1, max_length=64, description="IANA zone of a cron")]


class ScheduleCreate(BaseModel):
    """The body of POST /schedules: `cron` or `every`, not both."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: str | None = Field(None, pattern=ID_PATTERN, description="generated when absent")
    task: str = Field(min_length=1, max_length=200, description="a registered task type")
    params: dict[str, Any] = Field(default_factory=dict)
    cron: _Cron | None = None
    every: _Every | None = None
    tz: _Tz | None = None
    paused: StrictBool = False


class ScheduleUpdate(BaseModel):
    """The body of PATCH /schedules/{id}: the fields to change, each optional."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    params: dict[str, Any] | None = None
    cron: _Cron | None = None
    every: _Every | None = None
    tz: _Tz | None = None
    paused: StrictBool | None = None


class StatsMinute(BaseModel):
    """One minute of GET /stats: what ended in it, and the queue at its end."""

    minute: str = Field(description="the minute's start, ISO 8601 UTC, on the minute")
    completed: int = Field(description="attempts that ended completed in that minute")
    failed: int = Field(description="attempts that ended their task failed")
    cancelled: int = Field(description="tasks that ended cancelled (running or not yet)")
    retried: int = Field(description="attempts that failed and will be retried")
    queue_depth: int = Field(
        description="pending tasks due to run at the minute's end (its last sample)"
    )
    duration_p50: float | None = Field(
        description="median attempt duration in seconds (started_at to its end); null: none"
    )
    duration_p95: float | None = Field(description="95th percentile, seconds; null: none")


class TypeStats(BaseModel):
    """One task type's sums over the window of GET /stats."""

    name: str = Field(description="the task type")
    completed: int = Field(description="attempts that ended completed in the window")
    failed: int = Field(description="attempts that ended their task failed")
    cancelled: int = Field(description="tasks that ended cancelled")
    duration_p50: float | None = Field(description="median attempt duration, seconds")
    duration_p95: float | None = Field(description="95th percentile, seconds")


class StatsOut(BaseModel):
    """The last minutes at a glance, for the whole service whichever process answers."""

    series: list[StatsMinute] = Field(description="one item per minute, oldest first")
    by_type: list[TypeStats] = Field(description="each task type with runs in the window")


class Health(BaseModel):
    status: str
    worker: str
    running: int


class FileOut(BaseModel):
    id: str
    filename: str
    size: int
    sha256: str
    created_at: str


class ValidationIssue(BaseModel):
    """One complaint about a request, as pydantic words it (FastAPI's 422 items)."""

    type: str = Field(description="what kind of error, e.g. missing, extra_forbidden")
    loc: list[str | int] = Field(description='where: ["body", "params", "seconds"]')
    msg: str
    input: Any = Field(None, description="the value that was refused")
    ctx: dict[str, Any] | None = Field(None, description="the constraint, e.g. {'ge': 1}")


class ErrorOut(BaseModel):
    """Every error answer: `detail` is a sentence, or for invalid input a list of issues."""

    detail: str | list[ValidationIssue]
