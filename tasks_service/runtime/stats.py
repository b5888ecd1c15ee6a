"""The last hours at a glance (GET /stats): per-minute counts, queue depth and durations.

What is stored. Every attempt that ends (and every task cancelled before it started) adds 1
to a (minute, type, outcome, duration bucket) row of `stats_minutes`, in the very
transaction that ends it: the process that finishes it counts it in its group-commit batch,
and the engines' triggers count the rare ends no finish sees (`counted.CountedOutcome`).
The counts hold whichever process or host ran the task. The minute is the database's clock
at that write. The queue depth (pending and due) is sampled into
`stats_depth` by the watchers every few seconds, by whichever gets there first; a minute's
depth is its last sample. The watchers forget minutes older than a day.

What is read. A minute that ended more than SEALED_AFTER seconds ago can no longer change,
so each process keeps those in memory, with their percentiles and each whole hour's sums
worked out once, and reads only the newer minutes from the store: a day's window costs a
read of the last minute or two and a walk over 24 hours and two partial ones.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from store import Store
from tasks_service.counted import BUCKETS_PER_OCTAVE, NO_DURATION

MINUTE = 60
HOUR = 3600
KEPT_MINUTES = 1440  # a day: the longest window, and about how long the store keeps them
SEALED_AFTER = 30.0  # seconds after its end by the database's clock: a minute is final
DEPTH_SAMPLE_EVERY = 5.0  # seconds between queue depth samples, service-wide
OUTCOMES = ("completed", "failed", "cancelled", "retried")
_SLOT = {outcome: slot for slot, outcome in enumerate(OUTCOMES)}

Histogram = dict[int, int]  # duration bucket -> attempts


def minute_of(seconds: float) -> int:
    """The start of the minute `seconds` (Unix time) falls in."""
    return int(seconds // MINUTE) * MINUTE


def percentile(durations: Histogram, timed: int, q: float) -> float | None:
    """The duration (seconds, 4 significant digits) at `q` (0..1) of `timed` attempts.

    Buckets are log-spaced (BUCKETS_PER_OCTAVE to a doubling), so the value is interpolated
    geometrically within the bucket the rank falls in: within about 9% of the true one.
    """
    if timed <= 0:
        return None
    rank = q * timed
    seen = 0
    for bucket in sorted(durations):
        count = durations[bucket]
        if seen + count >= rank:
            within = (rank - seen) / count
            return float(f"{2 ** ((bucket + within) / BUCKETS_PER_OCTAVE):.4g}")
        seen += count
    return None


@dataclass(slots=True)
class Tally:
    """What ended in a span of time (a minute, an hour, a window): counts by outcome in
    OUTCOMES order, and the attempts' durations."""

    counts: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    durations: Histogram = field(default_factory=dict)
    timed: int = 0

    def count(self, outcome: str, bucket: int, n: int) -> None:
        slot = _SLOT.get(outcome)
        if slot is None:  # an outcome this version does not know: not ours to show
            return
        self.counts[slot] += n
        if bucket != NO_DURATION:
            self.durations[bucket] = self.durations.get(bucket, 0) + n
            self.timed += n

    def add(self, other: Tally) -> None:
        mine, theirs = self.counts, other.counts
        mine[0] += theirs[0]
        mine[1] += theirs[1]
        mine[2] += theirs[2]
        mine[3] += theirs[3]
        durations = self.durations
        for bucket, n in other.durations.items():
            durations[bucket] = durations.get(bucket, 0) + n
        self.timed += other.timed

    def copy(self) -> Tally:
        return Tally(list(self.counts), dict(self.durations), self.timed)

    def p50_p95(self) -> tuple[float | None, float | None]:
        return (
            percentile(self.durations, self.timed, 0.50),
            percentile(self.durations, self.timed, 0.95),
        )


@dataclass(slots=True)
class Minute:
    """One minute: what ended in it by task type, its queue depth sample (if any), and its
    item of the series as JSON, worked out once (the depth goes between `head` and `tail`:
    a minute without a sample shows the one before)."""

    by_type: dict[str, Tally] = field(default_factory=dict)
    depth: int | None = None
    head: str = ""
    tail: str = ""

    def tally(self, name: str) -> Tally:
        found = self.by_type.get(name)
        if found is None:
            found = self.by_type[name] = Tally()
        return found

    def settle(self, start: int) -> Minute:
        """Write its item of the series, once its rows are all in."""
        every = Tally()
        for tally in self.by_type.values():
            every.add(tally)
        completed, failed, cancelled, retried = every.counts
        p50, p95 = every.p50_p95()
        moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
        self.head = (
            f'{{"minute":"{moment}","completed":{completed},"failed":{failed},'
            f'"cancelled":{cancelled},"retried":{retried},"queue_depth":'
        )
        self.tail = f',"duration_p50":{_number(p50)},"duration_p95":{_number(p95)}}}'
        return self


def _number(value: float | None) -> str:
    return "null" if value is None else repr(value)


async def sample_queue_depth(store: Store) -> None:
    """Sample the queue depth into this minute's row, unless a process (this one or another)
    did in the last DEPTH_SAMPLE_EVERY seconds of this minute. Called from the watcher's
    heartbeat: no loop of its own."""
    now, last = await store.stats_clock()
    if last is not None and now - last < DEPTH_SAMPLE_EVERY and minute_of(last) == minute_of(now):
        return
    depth, _ = await store.queue_stats()
    await store.record_depth(minute_of(now), depth, now)


async def forget_old_minutes(store: Store) -> None:
    """Keep a day of minutes, and an hour more (the depth carried into a day's window)."""
    await store.purge_stats(minute_of(time.time()) - (KEPT_MINUTES + 60) * MINUTE)


class StatsReader:
    """Answers GET /stats from the store, keeping the minutes that can no longer change."""

    _SUMS_KEPT = 8  # sums of kept spans remembered (windows asked for within a minute)

    def __init__(self, store: Store) -> None:
        self.store = store
        # Every sealed minute from _kept_from to _kept_through, by its start.
        self._kept: dict[int, Minute] = {}
        self._kept_from = 0
        self._kept_through = -MINUTE  # nothing kept yet
        self._hours: dict[int, dict[str, Tally]] = {}  # sums of whole kept hours, by start
        self._sums: dict[tuple[int, int], dict[str, Tally]] = {}  # of kept spans, by ends
        self._depth_before: dict[int, int] = {}  # the depth carried into a window, by start
        self._skew = 0.0  # the database's clock less this host's, as last seen
        self._lock = asyncio.Lock()  # one refresh at a time: they share what is kept

    async def glance(self, minutes: int) -> dict[str, list[dict[str, Any]]]:
        """`{"series": [...], "by_type": [...]}` of the `minutes` minutes up to this one."""
        answer: dict[str, list[dict[str, Any]]] = json.loads(await self.glance_json(minutes))
        return answer

    async def glance_json(self, minutes: int) -> bytes:
        """The same as JSON, made from each kept minute's own JSON (a day is 1,440 items)."""
        async with self._lock:
            now, fresh = await self._refresh(minutes)
            last = minute_of(now)
            first = last - (minutes - 1) * MINUTE
            depth = self._depth_before.get(first)
            if depth is None:  # what came before a minute never changes: asked once
                depth = self._depth_before[first] = await self.store.depth_before(first) or 0
                if len(self._depth_before) > self._SUMS_KEPT:
                    del self._depth_before[next(iter(self._depth_before))]
            series = self._series(first, last, fresh, depth)
            by_type = json.dumps(self._by_type(first, last, fresh), separators=(",", ":"))
        return f'{{"series":{series},"by_type":{by_type}}}'.encode()

    async def _refresh(self, minutes: int) -> tuple[float, dict[int, Minute]]:
        """Read what is not kept yet, and keep what became final. Returns the database's
        clock, and the minutes that may still change (the last one or two), not kept.

        One trip: the clock comes with the rows, so which minutes to read is worked out
        from this host's clock and the last difference seen; in the rare case that guess
        fell on the wrong side of a minute, the missing one is read in a second trip."""
        guess = time.time() + self._skew
        read_from = self._needed_from(minute_of(guess) - (minutes - 1) * MINUTE)
        while True:
            scan = minute_of(guess) - read_from > 10 * MINUTE
            now, rows, depths = await self.store.stats_since(read_from, scan=scan)
            self._skew = now - time.time()
            first = minute_of(now) - (minutes - 1) * MINUTE
            needed = self._needed_from(first)
            if needed >= read_from:
                break
            read_from, guess = needed, now
        if not self._reaches(first):
            self._reset(first)
        last = minute_of(now)
        start = max(read_from, self._kept_through + MINUTE)
        read = {minute: Minute() for minute in range(start, last + MINUTE, MINUTE)}
        for minute, name, outcome, bucket, n in rows:
            if minute in read:
                read[minute].tally(name).count(outcome, bucket, n)
        for minute, depth in depths:
            if minute in read:
                read[minute].depth = depth
        sealed = minute_of(now - SEALED_AFTER) - MINUTE  # the newest minute that is final
        fresh: dict[int, Minute] = {}
        for minute, found in read.items():
            found.settle(minute)
            if minute <= sealed:
                self._kept[minute] = found
            else:
                fresh[minute] = found
        self._kept_through = max(self._kept_through, min(sealed, last))
        self._forget_before(last - (KEPT_MINUTES - 1) * MINUTE)
        return now, fresh

    def _reaches(self, first: int) -> bool:
        """Whether what is kept reaches back to `first`, with no gap since."""
        return self._kept_from <= first and self._kept_through >= first - MINUTE

    def _needed_from(self, first: int) -> int:
        """The first minute to read for a window from `first`: all of it when what is kept
        does not reach it (it grew, or a gap), else the first minute not kept."""
        return self._kept_through + MINUTE if self._reaches(first) else first

    def _reset(self, first: int) -> None:
        self._kept.clear()
        self._hours.clear()
        self._sums.clear()
        self._kept_from, self._kept_through = first, first - MINUTE

    def _forget_before(self, oldest: int) -> None:
        if self._kept_from >= oldest:
            return
        for minute in range(self._kept_from, min(oldest, self._kept_through + MINUTE), MINUTE):
            self._kept.pop(minute, None)
        for hour in [h for h in self._hours if h < oldest]:
            del self._hours[hour]
        self._sums = {ends: sums for ends, sums in self._sums.items() if ends[0] >= oldest}
        self._kept_from = oldest

    def _minute(self, minute: int, fresh: dict[int, Minute]) -> Minute:
        return self._kept[minute] if minute <= self._kept_through else fresh[minute]

    def _series(self, first: int, last: int, fresh: dict[int, Minute], depth: int) -> str:
        """One item per minute, oldest first, as JSON; a minute without a depth sample
        repeats the one before (nothing sampled it: the service was down, or just began)."""
        items = []
        for minute in range(first, last + MINUTE, MINUTE):
            found = self._minute(minute, fresh)
            if found.depth is not None:
                depth = found.depth
            items.append(f"{found.head}{depth}{found.tail}")
        return f"[{','.join(items)}]"

    def _by_type(self, first: int, last: int, fresh: dict[int, Minute]) -> list[dict[str, Any]]:
        """Each task type's sums over the window: the kept span's (worked out once per
        span), then the minutes that may still change."""
        kept_end = min(last, self._kept_through)
        totals = {name: tally.copy() for name, tally in self._kept_sums(first, kept_end).items()}
        for minute in range(max(first, kept_end + MINUTE), last + MINUTE, MINUTE):
            _add_all(totals, fresh[minute].by_type)
        items = []
        for name in sorted(totals):
            total = totals[name]
            if not any(total.counts):
                continue
            p50, p95 = total.p50_p95()
            items.append(
                {
                    "name": name,
                    "completed": total.counts[0],
                    "failed": total.counts[1],
                    "cancelled": total.counts[2],
                    "duration_p50": p50,
                    "duration_p95": p95,
                }
            )
        return items

    def _kept_sums(self, first: int, end: int) -> dict[str, Tally]:
        """By type, the sums of the kept minutes `first` to `end`: whole hours from their
        sums, the minutes around them one by one; remembered, as they never change."""
        if end < first:
            return {}
        found = self._sums.get((first, end))
        if found is not None:
            return found
        sums: dict[str, Tally] = {}
        minute = first
        while minute <= end:
            if minute % HOUR == 0 and minute + HOUR - MINUTE <= end:
                _add_all(sums, self._hour(minute))
                minute += HOUR
            else:
                _add_all(sums, self._kept[minute].by_type)
                minute += MINUTE
        if len(self._sums) >= self._SUMS_KEPT:
            del self._sums[next(iter(self._sums))]
        self._sums[(first, end)] = sums
        return sums

    def _hour(self, start: int) -> dict[str, Tally]:
        """The sums of a whole kept hour by type, worked out once."""
        found = self._hours.get(start)
        if found is None:
            found = self._hours[start] = {}
            for minute in range(start, start + HOUR, MINUTE):
                _add_all(found, self._kept[minute].by_type)
        return found


def _add_all(totals: dict[str, Tally], by_type: dict[str, Tally]) -> None:
    for name, tally in by_type.items():
        total = totals.get(name)
        if total is None:
            total = totals[name] = Tally()
        total.add(tally)
