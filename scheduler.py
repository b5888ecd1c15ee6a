"""Periodic jobs: APScheduler as an alarm clock whose every ring only inserts a task row.

Every process (`--workers N`, or several hosts) runs its own in-memory APScheduler with the
same schedules and the same fire times (intervals are aligned to the epoch). A fire inserts
the task keyed by `(schedule, tick)`, so whichever process gets there first makes the one
task of that tick and the others insert nothing. Pause state lives in the database.

- A tick is skipped while an earlier run of the same schedule is still pending or running,
  so a slow job never piles up.
- Ticks missed while the service was down are not replayed one by one: at start, if the
  latest tick was missed, it fires once (one catch-up run, not a burst).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from tasks import Cron, Every, Schedule, TaskRegistry, every
from tasks_service.models import NewTask, ScheduleNotFound, StoreUnavailable, Task, iso
from tasks_service.runtime.runner import Runner

log = logging.getLogger("tasks.scheduler")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A fire may come this late (a stalled loop, a busy machine) and still count for its tick.
MISFIRE_GRACE = 60


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    id: str
    task: str
    trigger: Schedule
    params: dict[str, Any] = field(default_factory=dict)


# The product's own schedules; a task type's `@task(schedule=...)` adds one named after it.
PRODUCT_SCHEDULES = (ScheduleSpec(id="purge_tasks", task="purge_tasks", trigger=every(hours=1)),)


def build_trigger(schedule: Schedule) -> BaseTrigger:
    if isinstance(schedule, Every):
        return IntervalTrigger(seconds=schedule.seconds, start_date=EPOCH, timezone=UTC)
    return CronTrigger(**schedule.trigger_fields(), timezone=schedule.tz)


def latest_tick(schedule: Schedule, trigger: BaseTrigger, now: datetime) -> datetime | None:
    """The last fire time at or before `now` (APScheduler does not tell a job its own)."""
    if isinstance(schedule, Every):
        elapsed = (now - EPOCH).total_seconds()
        return EPOCH + timedelta(seconds=elapsed // schedule.seconds * schedule.seconds)
    assert isinstance(schedule, Cron)
    # Look back over ever wider windows, so frequent and rare crons both take few steps.
    for window in (timedelta(minutes=2), timedelta(days=1), timedelta(days=400)):
        tick = trigger.get_next_fire_time(None, now - window)
        latest = None
        while tick is not None and tick <= now:
            latest = tick
            tick = trigger.get_next_fire_time(tick, tick + timedelta(microseconds=1))
        if latest is not None:
            return latest
    return None


def collect_schedules(registry: TaskRegistry) -> dict[str, ScheduleSpec]:
    """The product's schedules and those of `@task(schedule=...)`, checked now, not at 2am."""
    specs: dict[str, ScheduleSpec] = {}
    for spec in (*PRODUCT_SCHEDULES, *_task_schedules(registry)):
        if spec.id in specs:
            raise ValueError(f"two schedules have the id {spec.id!r}")
        params = registry.get(spec.task).validate(spec.params)
        specs[spec.id] = ScheduleSpec(spec.id, spec.task, spec.trigger, params)
    return specs


class Scheduler:
    def __init__(
        self, runner: Runner, registry: TaskRegistry, specs: dict[str, ScheduleSpec]
    ) -> None:
        self.runner = runner
        self.registry = registry
        self.specs = specs
        self._triggers = {spec.id: build_trigger(spec.trigger) for spec in self.specs.values()}
        self._apscheduler: AsyncIOScheduler | None = None

    async def start(self) -> None:
        await self._catch_up()
        self._apscheduler = AsyncIOScheduler(timezone=UTC)
        for spec in self.specs.values():
            self._apscheduler.add_job(
                self._fire,
                self._triggers[spec.id],
                args=[spec.id],
                id=spec.id,
                name=f"schedule {spec.id}",
                coalesce=True,
                max_instances=5,
                misfire_grace_time=MISFIRE_GRACE,
            )
        self._apscheduler.start()
        log.info("%d schedules: %s", len(self.specs), ", ".join(self.specs) or "none")

    def stop(self) -> None:
        if self._apscheduler is not None:
            # wait=False: it cannot wait for coroutine jobs; a fire is one short insert anyway.
            self._apscheduler.shutdown(wait=False)
            self._apscheduler = None

    async def _catch_up(self) -> None:
        states = await self.runner.store.schedule_states()
        now = datetime.now(UTC)
        for spec in self.specs.values():
            _, last_fire_at = states.get(spec.id, (False, None))
            tick = latest_tick(spec.trigger, self._triggers[spec.id], now)
            if last_fire_at is None or tick is None or tick.timestamp() <= last_fire_at:
                continue
            log.info("schedule %s missed its tick at %s: one catch-up run", spec.id, tick)
            await self._fire_tick(spec, tick)

    async def _fire(self, schedule_id: str) -> None:
        spec = self.specs[schedule_id]
        tick = latest_tick(spec.trigger, self._triggers[spec.id], datetime.now(UTC))
        if tick is not None:
            await self._fire_tick(spec, tick)

    async def _fire_tick(self, spec: ScheduleSpec, tick: datetime) -> Task | None:
        definition = self.registry.get(spec.task)
        new = NewTask(
            name=spec.task,
            params=spec.params,
            run_at=tick.timestamp(),
            max_attempts=definition.max_attempts,
            timeout=definition.timeout,
            schedule_id=spec.id,
            unique_key=f"tick:{spec.id}:{tick.isoformat()}",
        )
        try:
            task = await self.runner.insert_tick(new)
        except StoreUnavailable as exc:
            log.warning("schedule %s could not fire for %s: %s", spec.id, tick, exc)
            return None
        if task is not None:
            log.info("schedule %s fired for %s: task %s", spec.id, tick.isoformat(), task.id)
        return task

    # -- what the API shows and changes ----------------------------------------------------

    def get(self, schedule_id: str) -> ScheduleSpec:
        spec = self.specs.get(schedule_id)
        if spec is None:
            raise ScheduleNotFound(schedule_id)
        return spec

    async def describe_all(self) -> list[dict[str, Any]]:
        states = await self.runner.store.schedule_states()
        return [self._describe(spec, states) for spec in self.specs.values()]

    async def describe(self, schedule_id: str) -> dict[str, Any]:
        spec = self.get(schedule_id)
        return self._describe(spec, await self.runner.store.schedule_states())

    def _describe(
        self, spec: ScheduleSpec, states: dict[str, tuple[bool, float | None]]
    ) -> dict[str, Any]:
        paused, _ = states.get(spec.id, (False, None))
        next_run = None
        if not paused:
            upcoming = self._triggers[spec.id].get_next_fire_time(None, datetime.now(UTC))
            next_run = iso(upcoming.timestamp()) if upcoming else None
        return {
            "id": spec.id,
            "task": spec.task,
            "params": spec.params,
            "trigger": spec.trigger.describe(),
            "next_run_at": next_run,
            "paused": paused,
        }

    async def run_now(self, schedule_id: str) -> Task:
        """A run of the schedule now, paused or not, tracked like any other task."""
        spec = self.get(schedule_id)
        definition = self.registry.get(spec.task)
        new = NewTask(
            name=spec.task,
            params=spec.params,
            max_attempts=definition.max_attempts,
            timeout=definition.timeout,
            schedule_id=spec.id,
        )
        task, _ = await self.runner.insert(new)
        log.info("schedule %s run now: task %s", spec.id, task.id)
        return task

    async def set_paused(self, schedule_id: str, paused: bool) -> dict[str, Any]:
        self.get(schedule_id)
        await self.runner.store.set_paused(schedule_id, paused)
        log.info("schedule %s %s", schedule_id, "paused" if paused else "resumed")
        return await self.describe(schedule_id)


def _task_schedules(registry: TaskRegistry) -> list[ScheduleSpec]:
    return [
        ScheduleSpec(id=d.name, task=d.name, trigger=d.schedule)
        for d in registry
        if d.schedule is not None
    ]
