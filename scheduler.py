"""Periodic jobs: APScheduler as an alarm clock whose every ring only inserts task rows.

Every process (`--workers N`, or several hosts) runs its own in-memory APScheduler with the
same schedules and the same fire times (intervals are aligned to the epoch). A fire inserts
the task keyed by `(schedule, tick)`, so whichever process gets there first makes the one
task of that tick and the others insert nothing. Pause state lives in the database.

- A tick is skipped while an earlier run of the same schedule is still pending or running,
  so a slow job never piles up.
- Ticks missed while the service was down are not replayed one by one: at start, if the
  latest tick was missed, it fires once (one catch-up run, not a burst).
- Schedules that share a trigger (`every 60 s`, one cron in one zone) share one APScheduler
  job, whose ring inserts all their runs a few hundred rows per statement: 10,000 schedules
  cost APScheduler a handful of jobs, and one tick of them all a few dozen transactions.
- Schedules made at runtime (`tasks_service.schedules`) live in the database. Each process
  asks it every SYNC_EVERY seconds for what changed since the latest revision it saw (one
  indexed read, usually empty) and moves those schedules between its jobs. A process that
  has yet to hear of a change cannot fire the old definition: a tick names the revision it
  was fired from, and the database refuses one that is not the current one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from tasks import Cron, Every, Schedule, TaskRegistry, every
from tasks.schedules import parse_trigger
from tasks_service.models import (
    NewTask,
    ScheduleInfo,
    ScheduleNotFound,
    ScheduleState,
    StoredSchedule,
    StoreUnavailable,
    Task,
    TaskError,
)
from tasks_service.runtime.runner import Runner

log = logging.getLogger("tasks.scheduler")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# A fire may come this late (a stalled loop, a busy machine) and still count for its tick.
MISFIRE_GRACE = 60
# How often each process looks for schedules made, changed or deleted by any process.
SYNC_EVERY = 0.5
# Runs inserted per statement when many schedules share a tick, and statements in flight.
TICK_CHUNK = 200
TICK_CHUNKS_IN_FLIGHT = 4
# How long a stop waits for a tick being inserted.
_STOP_WAIT = 5.0
# At most this many runs of one ring are logged one by one; more get one line in all.
_LOGGED_ONE_BY_ONE = 5


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    id: str
    task: str
    trigger: Schedule
    params: dict[str, Any] = field(default_factory=dict)
    source: str = "code"  # or "api": made at runtime, stored in the database
    revision: int = 0  # of its definition in the database (0: defined in code)
    since: float = 0.0  # made or changed then: earlier ticks are not its own


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


@dataclass(eq=False, slots=True)
class _Group:
    """The schedules that share one trigger, and so one APScheduler job."""

    schedule: Schedule
    trigger: BaseTrigger
    job_id: str
    ids: set[str] = field(default_factory=set)


class Scheduler:
    def __init__(
        self, runner: Runner, registry: TaskRegistry, specs: dict[str, ScheduleSpec]
    ) -> None:
        """`specs`: the schedules defined in code; those made at runtime are read at start."""
        self.runner = runner
        self.registry = registry
        self.code_specs = specs
        self.specs: dict[str, ScheduleSpec] = {}
        self._groups: dict[Schedule, _Group] = {}
        self._job_numbers = itertools.count(1)
        self._apscheduler: AsyncIOScheduler | None = None
        self._revision = 0  # the latest change of a runtime schedule applied here
        self._sync_lock = asyncio.Lock()
        self._syncer: asyncio.Task[None] | None = None
        self._clashes: set[str] = set()  # runtime ids that clash with code ones, told once
        self._rings: set[asyncio.Task[Any]] = set()  # ticks being inserted now
        self._stopping = False
        for spec in specs.values():
            self._put(spec)

    async def start(self) -> None:
        await self.sync()
        await self._catch_up()
        self._apscheduler = AsyncIOScheduler(timezone=UTC)
        for group in self._groups.values():
            self._add_job(group)
        self._apscheduler.start()
        self._syncer = asyncio.create_task(self._sync_forever(), name="schedule-sync")
        made = len(self.specs) - len(self.code_specs)
        log.info(
            "%d schedules (%d made at runtime) on %d triggers; in code: %s",
            len(self.specs),
            made,
            len(self._groups),
            ", ".join(self.code_specs) or "none",
        )

    async def stop(self) -> None:
        """No new tick fires; one being inserted ends after its current chunks."""
        self._stopping = True
        if self._rings:
            await asyncio.wait(set(self._rings), timeout=_STOP_WAIT)
        if self._syncer is not None:
            self._syncer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._syncer
            self._syncer = None
        if self._apscheduler is not None:
            # wait=False: it cannot wait for coroutine jobs; a fire is a few short inserts.
            self._apscheduler.shutdown(wait=False)
            self._apscheduler = None

    # -- the alarm clock -------------------------------------------------------------------

    def _put(self, spec: ScheduleSpec) -> None:
        """Add or replace a schedule, moving it to the job of its trigger."""
        old = self.specs.get(spec.id)
        self.specs[spec.id] = spec
        if old is not None and old.trigger == spec.trigger:
            return
        if old is not None:
            self._leave(old)
        group = self._groups.get(spec.trigger)
        if group is None:
            job_id = f"ticks-{next(self._job_numbers)}"
            group = _Group(spec.trigger, build_trigger(spec.trigger), job_id)
            self._groups[spec.trigger] = group
            if self._apscheduler is not None:
                self._add_job(group)
        group.ids.add(spec.id)

    def _drop(self, schedule_id: str) -> None:
        spec = self.specs.pop(schedule_id, None)
        if spec is not None:
            self._leave(spec)

    def _leave(self, spec: ScheduleSpec) -> None:
        group = self._groups[spec.trigger]
        group.ids.discard(spec.id)
        if not group.ids:
            del self._groups[spec.trigger]
            if self._apscheduler is not None:
                self._apscheduler.remove_job(group.job_id)

    def _add_job(self, group: _Group) -> None:
        assert self._apscheduler is not None
        self._apscheduler.add_job(
            self._ring,
            group.trigger,
            args=[group.schedule],
            id=group.job_id,
            name=f"ticks of {group.schedule.describe()}",
            coalesce=True,
            max_instances=5,
            misfire_grace_time=MISFIRE_GRACE,
        )

    async def _ring(self, schedule: Schedule) -> None:
        """A trigger's job: every schedule on it fires for the tick that has just come."""
        group = self._groups.get(schedule)
        if group is None or self._stopping:
            return
        tick = latest_tick(schedule, group.trigger, datetime.now(UTC))
        if tick is None:
            return
        ring = asyncio.current_task()
        assert ring is not None
        self._rings.add(ring)
        try:
            await self._fire(sorted(group.ids), tick)
        finally:
            self._rings.discard(ring)

    async def _catch_up(self) -> None:
        states = await self.runner.store.schedule_states()
        now = datetime.now(UTC)
        for group in list(self._groups.values()):
            tick = latest_tick(group.schedule, group.trigger, now)
            if tick is None:
                continue
            missed = []
            for schedule_id in sorted(group.ids):
                last = states.get(schedule_id, ScheduleState()).last_fire_at
                if last is not None and tick.timestamp() > last:
                    missed.append(schedule_id)
            if missed:
                log.info(
                    "%s missed the tick at %s: one catch-up run",
                    _named(missed),
                    tick.isoformat(),
                )
                await self._fire(missed, tick)

    async def _fire(self, schedule_ids: Sequence[str], tick: datetime) -> list[Task]:
        """Runs of these schedules for `tick`, TICK_CHUNK rows per statement.

        A few chunks are in flight at once, so the group committer puts several in one
        transaction: a tick of 10,000 schedules costs a dozen commits, not fifty, and writes
        of the runs it starts meanwhile wait behind fewer of them.
        """
        fired: list[Task] = []
        in_flight: collections.deque[asyncio.Task[list[Task]]] = collections.deque()

        async def settle_one() -> None:
            chunk = in_flight.popleft()
            try:
                fired.extend(await chunk)
            except StoreUnavailable as exc:
                log.warning("schedules could not fire for %s: %s", tick.isoformat(), exc)

        for start in range(0, len(schedule_ids), TICK_CHUNK):
            if self._stopping:
                break
            ticks = self._ticks(schedule_ids[start : start + TICK_CHUNK], tick)
            in_flight.append(asyncio.create_task(self.runner.insert_ticks(ticks)))
            if len(in_flight) >= TICK_CHUNKS_IN_FLIGHT:
                await settle_one()
            else:
                await asyncio.sleep(0)  # what else is ready runs between two chunks
        while in_flight:
            await settle_one()
        if len(fired) <= _LOGGED_ONE_BY_ONE:
            for task in fired:
                log.info(
                    "schedule %s fired for %s: task %s", task.schedule_id, tick.isoformat(), task.id
                )
        else:
            log.info("%d schedules fired for %s", len(fired), tick.isoformat())
        return fired

    def _ticks(self, schedule_ids: Sequence[str], tick: datetime) -> list[tuple[NewTask, int]]:
        """The rows of one tick for these schedules, with the revision each is fired from."""
        at, key = tick.timestamp(), tick.isoformat()
        ticks = []
        for schedule_id in schedule_ids:
            spec = self.specs.get(schedule_id)
            if spec is None or at < spec.since:
                continue
            definition = self.registry.get(spec.task)
            new = NewTask(
                name=spec.task,
                params=spec.params,
                run_at=at,
                max_attempts=definition.max_attempts,
                timeout=definition.timeout,
                schedule_id=spec.id,
                unique_key=f"tick:{spec.id}:{key}",
            )
            ticks.append((new, spec.revision))
        return ticks

    # -- schedules made at runtime, from the database --------------------------------------

    async def sync(self) -> None:
        """Take in what changed among the schedules made at runtime, by any process."""
        async with self._sync_lock:
            for stored in await self.runner.store.schedules_since(self._revision):
                self._apply(stored)
                self._revision = max(self._revision, stored.revision)

    async def _sync_forever(self) -> None:
        while True:
            await asyncio.sleep(SYNC_EVERY)
            try:
                await self.sync()
            except StoreUnavailable as exc:
                log.warning("cannot read schedule changes: %s", exc)
            except Exception:
                log.exception("reading schedule changes failed; it goes on")

    def _apply(self, stored: StoredSchedule) -> None:
        if stored.id in self.code_specs:
            if not stored.deleted and stored.id not in self._clashes:
                self._clashes.add(stored.id)
                log.warning("schedule %s is also defined in code: the one in code runs", stored.id)
            return
        if stored.deleted:
            self._drop(stored.id)
            return
        try:
            spec = self.spec_of(stored)
        except TaskError as exc:
            log.warning("schedule %s cannot run here: %s", stored.id, exc)
            self._drop(stored.id)
            return
        self._put(spec)

    def spec_of(self, stored: StoredSchedule) -> ScheduleSpec:
        """The schedule a stored definition describes, checked against this process's task
        types (UnknownTaskType, InvalidParams, InvalidSchedule)."""
        definition = self.registry.get(stored.task or "")
        return ScheduleSpec(
            id=stored.id,
            task=definition.name,
            trigger=parse_trigger(stored.every, stored.cron, stored.tz),
            params=definition.validate(stored.params),
            source="api",
            revision=stored.revision,
            since=stored.trigger_set_at,
        )

    # -- what the API shows and changes ----------------------------------------------------

    async def get(self, schedule_id: str) -> ScheduleSpec:
        """The schedule; one made a moment ago by another process is looked for in the
        database before this process is sure there is none (a client's next request may
        reach any process)."""
        spec = self.specs.get(schedule_id)
        if spec is None:
            await self.sync()
            spec = self.specs.get(schedule_id)
        if spec is None:
            raise ScheduleNotFound(schedule_id)
        return spec

    async def describe_all(self) -> list[ScheduleInfo]:
        """Those in code first, in their order, then those made at runtime by id (including
        any made a moment ago by another process)."""
        await self.sync()
        states = await self.runner.store.schedule_states()
        now = datetime.now(UTC)
        upcoming = {
            key: group.trigger.get_next_fire_time(None, now) for key, group in self._groups.items()
        }
        made = sorted(spec_id for spec_id in self.specs if spec_id not in self.code_specs)
        return [
            self._info(self.specs[spec_id], states.get(spec_id, ScheduleState()), upcoming)
            for spec_id in (*self.code_specs, *made)
        ]

    async def describe(self, schedule_id: str) -> ScheduleInfo:
        spec = await self.get(schedule_id)
        state = await self.runner.store.schedule_state(schedule_id)
        # A change seen by the watcher while the state was read may have replaced the spec
        # (and dropped its old trigger's group): answer with what holds now.
        spec = self.specs.get(schedule_id, spec)
        group = self._groups.get(spec.trigger)
        now = datetime.now(UTC)
        upcoming = {spec.trigger: group.trigger.get_next_fire_time(None, now) if group else None}
        return self._info(spec, state, upcoming)

    @staticmethod
    def _info(
        spec: ScheduleSpec, state: ScheduleState, upcoming: dict[Schedule, datetime | None]
    ) -> ScheduleInfo:
        next_run = upcoming[spec.trigger]
        trigger = spec.trigger
        return ScheduleInfo(
            id=spec.id,
            task=spec.task,
            params=spec.params,
            trigger=trigger.describe(),
            every=trigger.seconds if isinstance(trigger, Every) else None,
            cron=trigger.expression if isinstance(trigger, Cron) else None,
            tz=trigger.tz if isinstance(trigger, Cron) else None,
            next_run_at=None if state.paused or next_run is None else next_run.timestamp(),
            paused=state.paused,
            source=spec.source,
            last_run_at=state.last_run_at,
            last_task_id=state.last_task_id,
        )

    async def run_now(self, schedule_id: str) -> Task:
        """A run of the schedule now, paused or not, tracked like any other task."""
        spec = await self.get(schedule_id)
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

    async def set_paused(self, schedule_id: str, paused: bool) -> ScheduleInfo:
        await self.get(schedule_id)
        await self.runner.store.set_paused(schedule_id, paused)
        log.info("schedule %s %s", schedule_id, "paused" if paused else "resumed")
        return await self.describe(schedule_id)


def _named(schedule_ids: Sequence[str]) -> str:
    """How a log line names schedules: a few by id, many by their number."""
    if len(schedule_ids) > _LOGGED_ONE_BY_ONE:
        return f"{len(schedule_ids):,} schedules"
    return ("schedule " if len(schedule_ids) == 1 else "schedules ") + ", ".join(schedule_ids)


def _task_schedules(registry: TaskRegistry) -> list[ScheduleSpec]:
    return [
        ScheduleSpec(id=d.name, task=d.name, trigger=d.schedule)
        for d in registry
        if d.schedule is not None
    ]
