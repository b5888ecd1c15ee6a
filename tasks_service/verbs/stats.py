"""The store's verbs for the last hours at a glance (runtime.stats): per-minute counts and
queue depth samples."""

from __future__ import annotations

from tasks_service.verbs.base import StoreIO


class StatsVerbs(StoreIO):
    async def stats_clock(self) -> tuple[float, float | None]:
        """The database's clock now (what minutes are counted by), and when the queue depth
        was last sampled by it (None: never)."""
        rows = await self._read(self.sql.stats_clock)
        return float(rows[0][0]), None if rows[0][1] is None else float(rows[0][1])

    async def stats_since(
        self, first: int, *, scan: bool = False
    ) -> tuple[float, list[tuple[int, str, str, int, int]], list[tuple[int, int]]]:
        """In one trip: the database's clock, then from minute `first` on, (minute, type,
        outcome, bucket, count) rows and (minute, depth) samples."""
        counts: list[tuple[int, str, str, int, int]] = []
        depths: list[tuple[int, int]] = []
        now = 0.0
        for kind, minute, name, outcome, value, n in await self._read(
            self.sql.stats_since, (first, first), scan=scan
        ):
            if kind == 0:
                counts.append((int(minute), name, outcome, int(value), int(n)))
            elif kind == 1:
                depths.append((int(minute), int(value)))
            else:
                now = float(minute)
        return now, counts, depths

    async def depth_before(self, minute: int) -> int | None:
        """The queue depth sampled last before `minute` (None: never)."""
        rows = await self._read(self.sql.depth_before, (minute,))
        return int(rows[0][0]) if rows else None

    async def record_depth(self, minute: int, depth: int, sampled_at: float) -> None:
        """The queue depth of `minute` so far (an earlier sample of it is replaced)."""
        await self._write(self.sql.record_depth, (minute, depth, sampled_at))

    async def purge_stats(self, before_minute: int) -> None:
        """Forget the minutes before `before_minute` (both queued first: one transaction)."""
        counts = self._write(self.sql.purge_stats, (before_minute,))
        depths = self._write(self.sql.purge_depth, (before_minute,))
        await counts
        await depths
