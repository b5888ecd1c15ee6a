"""The schedule specifications of periodic task types: `every(...)` and `cron(...)`."""

from __future__ import annotations

import functools
import math
import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tasks_service.models import InvalidSchedule


@dataclass(frozen=True, slots=True)
class Every:
    """A fixed interval; fires are aligned to the epoch, so every process agrees on them."""

    seconds: float

    def describe(self) -> str:
        return f"every {self.seconds:g} s"


@dataclass(frozen=True, slots=True)
class Cron:
    """A crontab expression (minute hour day month weekday), read in `tz` (UTC by default)."""

    expression: str
    tz: str = "UTC"

    def describe(self) -> str:
        return f"cron {self.expression!r} ({self.tz})"

    def trigger_fields(self) -> dict[str, str]:
        """APScheduler CronTrigger arguments, weekdays numbered as crontab numbers them."""
        fields = self.expression.split()
        if len(fields) != 5:
            raise ValueError(f"a cron expression has 5 fields, got {self.expression!r}")
        minute, hour, day, month, weekday = fields
        return {
            "minute": minute,
            "hour": hour,
            "day": day,
            "month": month,
            "day_of_week": crontab_weekdays(weekday),
        }


_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab_weekdays(field: str) -> str:
    """Crontab's weekday field (0 or 7 = Sunday) as day names.

    APScheduler 3 numbers weekdays from Monday = 0, so `from_crontab("0 2 * * 1")` would run
    on Tuesdays. Names mean the same to both, so numbers are spelled out as names.
    """
    names: list[str] = []
    for part in field.split(","):
        if part == "*" or any(c.isalpha() for c in part):
            names.append(part)
            continue
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = 0, 6
        elif "-" in span:
            first_text, last_text = span.split("-", 1)
            first, last = int(first_text), int(last_text)
        else:
            first = last = int(span)
            if step_text:
                last = 6
        if not (0 <= first <= 7 and 0 <= last <= 7 and first <= last and step >= 1):
            raise ValueError(f"bad day-of-week field {field!r}")
        names.extend(_DAY_NAMES[day % 7] for day in range(first, last + 1, step))
    return ",".join(dict.fromkeys(names))


Schedule = Every | Cron


def every(*, seconds: float = 0, minutes: float = 0, hours: float = 0, days: float = 0) -> Every:
    total = timedelta(seconds=seconds, minutes=minutes, hours=hours, days=days).total_seconds()
    if total <= 0:
        raise ValueError("every(...) needs a positive interval")
    return Every(total)


# The longest interval `every` takes: ten years.
MAX_EVERY = 10 * 365 * 86400.0
MAX_CRON_LENGTH = 200


def parse_trigger(every_seconds: float | None, expression: str | None, tz: str | None) -> Schedule:
    """The trigger of a schedule made at runtime, from its `every`, `cron` and `tz` fields.

    Checked as APScheduler reads them; anything it would refuse, or that never fires, is an
    InvalidSchedule naming the field at fault (None: the fields together).
    """
    if every_seconds is not None and expression is not None:
        raise InvalidSchedule(None, "give cron or every, not both")
    if every_seconds is None and expression is None:
        raise InvalidSchedule(None, "give cron (a crontab expression) or every (seconds)")
    if every_seconds is not None:
        if tz is not None:
            raise InvalidSchedule("tz", "tz applies to cron schedules only (every is in seconds)")
        if isinstance(every_seconds, bool) or not isinstance(every_seconds, int | float):
            raise InvalidSchedule("every", "every must be a number of seconds")
        if not (math.isfinite(every_seconds) and 1 <= every_seconds <= MAX_EVERY):
            raise InvalidSchedule(
                "every", f"every must be at least 1 and at most {MAX_EVERY:.0f} seconds"
            )
        return Every(float(every_seconds))
    assert expression is not None
    if tz is not None and not isinstance(tz, str):
        raise InvalidSchedule("tz", "tz must be the name of a time zone, such as Europe/Paris")
    if not isinstance(expression, str) or len(expression) > MAX_CRON_LENGTH:
        raise InvalidSchedule(
            "cron", f"cron must be a crontab expression of at most {MAX_CRON_LENGTH} characters"
        )
    return _parse_cron(expression, "UTC" if tz is None else tz)


@functools.cache
def _time_zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


@functools.lru_cache(maxsize=4096)
def _parse_cron(expression: str, tz: str) -> Cron:
    """Cached: a start with 10,000 schedules reads a few distinct expressions many times."""
    from apscheduler.triggers.cron import CronTrigger

    if tz not in _time_zones():
        raise InvalidSchedule("tz", f"unknown time zone {tz!r}: give an IANA name such as UTC")
    schedule = Cron(" ".join(expression.split()), tz)
    try:
        trigger = CronTrigger(**schedule.trigger_fields(), timezone=tz)
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidSchedule("cron", f"bad cron expression {expression!r}: {exc}") from None
    if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
        raise InvalidSchedule("cron", f"cron expression {expression!r} never fires")
    return schedule


def cron(expression: str, *, tz: str = "UTC") -> Cron:
    # Parse now so that a typo fails at import, not at the first fire.
    from apscheduler.triggers.cron import CronTrigger

    schedule = Cron(expression, tz)
    CronTrigger(**schedule.trigger_fields(), timezone=tz)
    return schedule
