"""The per-minute counts' arithmetic and SQL (GET /stats): the duration buckets, shared by
the process that counts its finishes (group_commit.EndedCounts) and the reader
(runtime.stats), and the `tasks_counted` trigger's parts, shared by the engines."""

from __future__ import annotations

import math
from dataclasses import dataclass

from tasks_service.sql import Dialect, minute_now

# An attempt's duration is counted in bucket floor(log2(seconds) * 4): four buckets per
# doubling, so a percentile read from them is within about 9% of the true one.
BUCKETS_PER_OCTAVE = 4
NO_DURATION = -1000  # the bucket of a count without a duration of its own
SHORTEST_DURATION = 1e-6  # shorter (or negative: a clock stepped back) counts as this


def duration_bucket(seconds: float | None) -> int:
    if seconds is None:
        return NO_DURATION
    return math.floor(math.log2(max(seconds, SHORTEST_DURATION)) * BUCKETS_PER_OCTAVE)


@dataclass(frozen=True, slots=True)
class CountedOutcome:
    """The parts of the two triggers that count the rare ends of a task no process's finish
    counts, shared by the engines.

    A finish (the runner's record of how an attempt ended) is counted by its process, with
    the attempt's duration, in the same transaction (see group_commit.EndedCounts): a
    per-row trigger on that hot path would cost ~10% of throughput. What the triggers count
    is rare, and a plain finish must not even pay for their conditions (PostgreSQL reads a
    WHEN again for each row of an executemany: a long one, false on every finish, cost 13%
    of its throughput; there the WHEN is `NEW.cancel_requested` and the rest is tested in
    the trigger's function):

    - `tasks_counted`, on `finished_at` (every end writes it, no claim does), only when a
      cancel was asked, its first test: a task cancelled before it started (`unstarted`); a
      running task ended by another writer, a shutdown's release or a dead worker's
      recovery (`handed`: released or interruptions changed); a finish overridden by a
      cancel stored meanwhile (`overridden`: the finish counted what its process asked,
      `ended_as`, and the trigger moves that count to cancelled);
    - `tasks_given_up`, on `interruptions` (only a recovery writes it): a dead worker's task
      given up after repeated interruptions, failed.

    Minutes are the database's clock at the write, as for the finishes' counts.
    """

    when: str  # of tasks_counted: a cancel was asked, and `cancelled_ends`
    cancelled_ends: str
    given_up_when: str  # of tasks_given_up
    overridden: str
    bucket: str  # of the +1 row: the duration for `handed`, else none
    shard: str  # PostgreSQL: each process's own rows

    @classmethod
    def of(cls, dialect: Dialect, *, shard: str) -> CountedOutcome:
        by_finish = "NEW.released = OLD.released AND NEW.interruptions = OLD.interruptions"
        unstarted = "OLD.status = 'pending' AND NEW.status = 'cancelled'"
        handed = (
            "OLD.status = 'running' AND NEW.status IN ('cancelled', 'failed') "
            f"AND NOT ({by_finish})"
        )
        overridden = (
            f"OLD.status = 'running' AND NEW.status = 'cancelled' AND {by_finish} "
            "AND coalesce(NEW.ended_as, '') <> 'cancelled'"
        )
        cancelled_ends = f"({unstarted}) OR ({handed}) OR ({overridden})"
        scale = BUCKETS_PER_OCTAVE / math.log(2)
        seconds = f"{dialect.greatest}(NEW.finished_at - NEW.started_at, {SHORTEST_DURATION})"
        timed = f"CAST(floor(ln({seconds}) * {scale!r}) AS INTEGER)"
        return cls(
            when=f"NEW.cancel_requested AND ({cancelled_ends})",
            cancelled_ends=cancelled_ends,
            given_up_when="OLD.status = 'running' AND NEW.status = 'failed'",
            overridden=overridden,
            bucket=(
                f"CASE WHEN {handed} THEN coalesce({timed}, {NO_DURATION}) ELSE {NO_DURATION} END"
            ),
            shard=shard,
        )

    def rows(self, dialect: Dialect) -> list[str]:
        """The triggers' statements: +1 to the new status, and for an overridden
        finish -1 to what it asked (its duration stays counted: the attempt did run)."""
        upsert = (
            "ON CONFLICT (minute, name, outcome, bucket, shard) DO UPDATE "
            "SET n = stats_minutes.n + excluded.n"
        )
        insert = "INSERT INTO stats_minutes (minute, name, outcome, bucket, shard, n) "
        minute = minute_now(dialect)
        return [
            f"{insert}VALUES ({minute}, NEW.name, NEW.status, {self.bucket}, {self.shard}, 1) "
            f"{upsert}",
            f"{insert}SELECT {minute}, NEW.name, NEW.ended_as, {NO_DURATION}, {self.shard}, -1 "
            f"WHERE {self.overridden} {upsert}",
        ]
