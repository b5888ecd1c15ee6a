"""What a runner knows of its task types' lanes: where each task waits, and what to claim.

A task of a plain type waits in no lane (one index for all of them). The others wait in a
lane (see tasks_service.claims): process types in their own, limited types in their own or
one per value of their `limit_key`, and a paused plain type in its own while it is paused,
so that no claim walks past its tasks. Declarations and pauses are stored (`task_types`), so
every process and host counts the same limits and sees the same pauses.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from store import Store
from tasks import TaskDefinition, TaskRegistry
from tasks_service.claims import ClaimPlan
from tasks_service.models import TypeState, UnknownTaskType

log = logging.getLogger("tasks.runner")

_SMALLEST_RATE_TICK = 0.005


def declared_state(definition: TaskDefinition) -> TypeState:
    limits = definition.limits
    return TypeState(
        definition.name,
        process=definition.process,
        concurrency=limits.concurrency,
        rate_count=limits.rate.count if limits.rate else None,
        rate_period=limits.rate.period if limits.rate else None,
        limit_key=limits.key,
    )


@dataclass(frozen=True, slots=True)
class _Kinds:
    process_lanes: tuple[str, ...]
    limited: tuple[str, ...]
    limited_process: tuple[str, ...]
    keyed: tuple[str, ...]
    keyed_process: tuple[str, ...]

    @classmethod
    def of(cls, registry: TaskRegistry) -> _Kinds:
        def names(process: bool, kind: str) -> tuple[str, ...]:
            return tuple(d.name for d in registry if d.process == process and _kind(d) == kind)

        return cls(
            process_lanes=names(True, "unlimited"),
            limited=names(False, "limited"),
            limited_process=names(True, "limited"),
            keyed=names(False, "keyed"),
            keyed_process=names(True, "keyed"),
        )


def _kind(definition: TaskDefinition) -> str:
    if definition.limits.key is not None:
        return "keyed"
    return "limited" if definition.limits.limited else "unlimited"


class Lanes:
    def __init__(self, registry: TaskRegistry) -> None:
        self.registry = registry
        self._kinds = _Kinds.of(registry)
        self.process_names = frozenset(d.name for d in registry if d.process)
        self._limited = frozenset(d.name for d in registry if d.limits.limited)
        self.paused: frozenset[str] = frozenset()
        ticks = [d.limits.rate.period / d.limits.rate.count for d in registry if d.limits.rate]
        # While rate-limited tasks wait, the dispatcher looks again this often.
        self.rate_tick = max(_SMALLEST_RATE_TICK, min(ticks)) if ticks else None

    def lane(self, name: str, params: dict[str, Any]) -> str | None:
        try:
            definition = self.registry.get(name)
        except UnknownTaskType:
            return None
        lane = definition.lane(params)
        if lane is None and name in self.paused:
            return name  # held apart while its type is paused
        return lane

    def startable_at_insert(self, name: str) -> bool:
        """Whether a new task may start without a claim: only where no shared limit or
        pause has a say (this process's own slots are checked by the runner)."""
        return name not in self._limited and name not in self.paused

    def plan(self, limit: int, process_limit: int) -> ClaimPlan:
        kinds = self._kinds
        return ClaimPlan(
            limit=limit,
            process_limit=process_limit,
            process_lanes=kinds.process_lanes,
            limited=kinds.limited,
            limited_process=kinds.limited_process,
            keyed=kinds.keyed,
            keyed_process=kinds.keyed_process,
        )

    async def refresh(self, store: Store) -> None:
        """Read the pauses (another process or host may have changed them)."""
        self.paused = await store.paused_types()

    async def declare(self, store: Store) -> None:
        """State this registry's declarations, and move the waiting tasks of any type whose
        declaration changed since they were queued to the lanes it now gives them."""
        stored = await store.type_states()
        await store.declare_types([declared_state(d) for d in self.registry])
        self.paused = frozenset(name for name, state in stored.items() if state.paused)
        for definition in self.registry:
            before = stored.get(definition.name)
            if before is not None and before.same_declaration(declared_state(definition)):
                continue
            moved = await self._relane(store, definition)
            if moved:
                log.info("%d waiting %s tasks moved to their new lanes", moved, definition.name)

    async def set_paused(self, store: Store, name: str, paused: bool) -> None:
        """Pause or resume a type everywhere; a plain type's waiting tasks move apart or back."""
        definition = self.registry.get(name)
        await store.set_type_paused(name, paused)
        self.paused = (self.paused | {name}) if paused else (self.paused - {name})
        if not (definition.process or definition.limits.limited):
            await self._relane(store, definition)

    async def _relane(self, store: Store, definition: TaskDefinition) -> int:
        moves = [
            (lane, task_id)
            for task_id, params, current in await store.pending_of_type(definition.name)
            if (lane := self.lane(definition.name, params)) != current
        ]
        await store.move_lanes(moves)
        return len(moves)
