"""The schedule specifications of periodic task types: `every(...)` and `cron(...)`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


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


def cron(expression: str, *, tz: str = "UTC") -> Cron:
    # Parse now so that a typo fails at import, not at the first fire.
    from apscheduler.triggers.cron import CronTrigger

    schedule = Cron(expression, tz)
    CronTrigger(**schedule.trigger_fields(), timezone=tz)
    return schedule
