"""Schedules made at runtime: created, changed and deleted over HTTP or from Python.

Everything is checked before anything is stored: the task type, its params (as `POST
/tasks` checks them), the trigger (as APScheduler reads it), the id. A definition is stored
in the database, where every process and host finds it (`Scheduler.sync`); the process
that made the change applies it at once, the others within `SYNC_EVERY`. Schedules defined
in code change with the code: here they can only be paused, resumed and run.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from typing import Any

from scheduler import Scheduler
from store import Store
from tasks import TaskDefinition, TaskRegistry
from tasks.schedules import parse_trigger
from tasks_service.models import (
    InvalidSchedule,
    ScheduleExists,
    ScheduleInCode,
    ScheduleInfo,
    ScheduleNotFound,
    StoredSchedule,
    StoreUnavailable,
    new_id,
)
from tasks_service.uploaded import check_uploaded_files

ID_PATTERN = r"^[A-Za-z0-9_.:\-]{1,100}$"
_ID = re.compile(ID_PATTERN)
# A change that keeps meeting another one made in between gives up after this many reads.
_CHANGE_ATTEMPTS = 5


def check_id(schedule_id: Any) -> str:
    if not isinstance(schedule_id, str) or not _ID.fullmatch(schedule_id):
        raise InvalidSchedule("id", "id must be 1 to 100 of A-Z a-z 0-9 _ . : -")
    return schedule_id


class RuntimeSchedules:
    def __init__(self, scheduler: Scheduler, store: Store, registry: TaskRegistry) -> None:
        self.scheduler = scheduler
        self.store = store
        self.registry = registry

    async def create(
        self,
        task: str | TaskDefinition,
        *,
        schedule_id: str | None = None,
        params: dict[str, Any] | None = None,
        every: float | None = None,
        cron: str | None = None,
        tz: str | None = None,
        paused: bool = False,
    ) -> ScheduleInfo:
        """Store a new schedule; ScheduleExists if the id is taken (in code or at runtime)."""
        schedule_id = new_id()[0] if schedule_id is None else check_id(schedule_id)
        name = task if isinstance(task, str) else task.name
        definition = self.registry.get(name)
        stored = StoredSchedule(
            id=schedule_id,
            task=definition.name,
            params={},
            every=every,
            cron=cron,
            tz=tz,
            paused=bool(paused),
            deleted=False,
            revision=0,
            trigger_set_at=0.0,
        )
        stored = await self._checked(stored, definition, {} if params is None else params)
        if schedule_id in self.scheduler.code_specs:
            raise ScheduleExists(schedule_id)
        if await self.store.insert_schedule(stored) is None:
            raise ScheduleExists(schedule_id)
        await self.scheduler.sync()
        return await self.scheduler.describe(schedule_id)

    async def update(
        self,
        schedule_id: str,
        *,
        params: dict[str, Any] | None = None,
        every: float | None = None,
        cron: str | None = None,
        tz: str | None = None,
        paused: bool | None = None,
    ) -> ScheduleInfo:
        """Change what is given (None: unchanged); the next tick uses it, in every process.

        `every` or `cron` replaces the trigger; `tz` alone moves a cron schedule to another
        zone. `params` replaces the params as a whole.
        """
        self._not_in_code(schedule_id, "change")
        for _ in range(_CHANGE_ATTEMPTS):
            old = await self._stored(schedule_id)
            definition = self.registry.get(old.task or "")
            new = _merged(old, every, cron, tz)
            new = await self._checked(new, definition, old.params if params is None else params)
            if (new.every, new.cron, new.tz) != (old.every, old.cron, old.tz):
                new = replace(new, trigger_set_at=time.time())  # earlier ticks were the old's
            changed = await self.store.update_schedule(
                new, None if paused is None else bool(paused), read_at_revision=old.revision
            )
            if changed is not None:
                await self.scheduler.sync()
                return await self.scheduler.describe(schedule_id)
        raise StoreUnavailable(f"schedule {schedule_id!r} keeps changing meanwhile; try again")

    async def delete(self, schedule_id: str) -> None:
        """No tick fires after this, in any process (the database refuses them)."""
        self._not_in_code(schedule_id, "delete")
        if not _ID.fullmatch(schedule_id) or not await self.store.delete_schedule(schedule_id):
            raise ScheduleNotFound(schedule_id)
        await self.scheduler.sync()

    def _not_in_code(self, schedule_id: str, action: str) -> None:
        if schedule_id in self.scheduler.code_specs:
            raise ScheduleInCode(schedule_id, action)

    async def _stored(self, schedule_id: str) -> StoredSchedule:
        stored = await self.store.get_schedule(schedule_id) if _ID.fullmatch(schedule_id) else None
        if stored is None:
            raise ScheduleNotFound(schedule_id)
        return stored

    async def _checked(
        self, stored: StoredSchedule, definition: TaskDefinition, params: dict[str, Any]
    ) -> StoredSchedule:
        """`stored` with its params validated (defaults filled in) and its trigger checked;
        its cron zone spelled out (UTC when none is given)."""
        parse_trigger(stored.every, stored.cron, stored.tz)
        if not isinstance(params, dict):
            raise InvalidSchedule("params", "params must be an object")
        validated = definition.validate(params)
        await check_uploaded_files(self.store, definition, validated)
        cron_tz = None if stored.cron is None else (stored.tz or "UTC")
        every = None if stored.every is None else float(stored.every)
        return replace(stored, params=validated, every=every, tz=cron_tz)


def _merged(
    old: StoredSchedule, every: float | None, cron: str | None, tz: str | None
) -> StoredSchedule:
    """The definition after a change of trigger fields (None: not given)."""
    if every is not None or cron is not None:
        # A new cron keeps the zone of the old one unless a zone is given.
        kept_tz = old.tz if old.cron is not None and cron is not None else None
        return replace(old, every=every, cron=cron, tz=tz if tz is not None else kept_tz)
    if tz is not None:
        if old.cron is None:
            raise InvalidSchedule("tz", "tz applies to cron schedules only (this one is every)")
        return replace(old, tz=tz)
    return old
