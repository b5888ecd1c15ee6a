"""The store's verbs for schedules: their runs and pauses, and those made at runtime."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from tasks_service.models import ScheduleState, StoredSchedule, dump_json
from tasks_service.sql import SCHEDULES_LOCK, schedule_from_row
from tasks_service.verbs.base import StoreIO


class ScheduleVerbs(StoreIO):
    async def schedule_states(self) -> dict[str, ScheduleState]:
        """What the database knows of each schedule's runs and pause, by id."""
        rows = await self._read(self.sql.schedule_states)
        return {row[0]: _state_from_row(row) for row in rows}

    async def schedule_state(self, schedule_id: str) -> ScheduleState:
        rows = await self._read(self.sql.schedule_state, (schedule_id,))
        return _state_from_row(rows[0]) if rows else ScheduleState()

    async def set_paused(self, schedule_id: str, paused: bool) -> None:
        await self._write(self.sql.set_paused, (schedule_id, paused))

    async def schedules_since(self, revision: int) -> list[StoredSchedule]:
        """Schedules made at runtime that changed after `revision` (tombstones too), in order."""
        rows = await self._read(self.sql.schedules_since, (revision,))
        return [schedule_from_row(row) for row in rows]

    async def get_schedule(self, schedule_id: str) -> StoredSchedule | None:
        """A live schedule made at runtime."""
        rows = await self._read(self.sql.get_schedule, (schedule_id,))
        return schedule_from_row(rows[0]) if rows else None

    async def insert_schedule(self, schedule: StoredSchedule) -> int | None:
        """Store a new schedule; its revision, or None if a live one has its id."""
        now = time.time()
        return await self._change_schedule(
            self.sql.insert_schedule,
            (
                schedule.id,
                schedule.task,
                dump_json(schedule.params),
                schedule.every,
                schedule.cron,
                schedule.tz,
                schedule.paused,
                now,
                now,  # its last tick handled: a tick missed while down is caught up at start
            ),
        )

    async def update_schedule(
        self, schedule: StoredSchedule, paused: bool | None, *, read_at_revision: int
    ) -> int | None:
        """Change a schedule's definition (and its pause, unless None); its new revision, or
        None if it changed since `read_at_revision` or is gone. Its `trigger_set_at` is the
        caller's: now if the trigger changed, else as it was."""
        return await self._change_schedule(
            self.sql.update_schedule,
            (
                dump_json(schedule.params),
                schedule.every,
                schedule.cron,
                schedule.tz,
                paused,
                schedule.trigger_set_at,
                schedule.id,
                read_at_revision,
            ),
        )

    async def delete_schedule(self, schedule_id: str) -> bool:
        """Delete a schedule made at runtime; False if there is none with that id."""
        revision = await self._change_schedule(self.sql.delete_schedule, (time.time(), schedule_id))
        return revision is not None

    async def _change_schedule(self, sql: str, params: Sequence[Any]) -> int | None:
        """One change of a definition, under the engine's schedule lock: revisions are then
        handed out in commit order."""
        steps: list[tuple[str, Sequence[Any]]] = [(sql, params)]
        if self.sql.lock_schedule is not None:
            steps.insert(0, (self.sql.lock_schedule, (SCHEDULES_LOCK,)))
        rows = (await self._write_atomically(steps))[-1]
        return int(rows[0][0]) if rows else None


def _state_from_row(row: Sequence[Any]) -> ScheduleState:
    return ScheduleState(bool(row[1]), row[2], row[3], row[4])
