"""A small crash loop (bench/crashloop.py): SIGKILLs under load lose and strand nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.crashloop import crashloop, table

pytestmark = pytest.mark.slow

KILLS = 5
CONCURRENCY = 8


def test_repeated_sigkills_under_load_lose_nothing(tmp_path: Path) -> None:
    result = crashloop(
        tmp_path,
        kills=KILLS,
        connections=4,
        rate=40.0,
        concurrency=CONCURRENCY,
        up_seconds=(0.5, 2.0),
        drain_timeout=20.0,
        seed=1,
    )
    report = table(result, CONCURRENCY)
    assert result.accepted > 100, report
    assert result.lost == 0, report
    assert result.stuck == 0, report
    assert result.completed == result.accepted, report
    assert result.ok, f"{result.problems()}\n{report}"
    # At-least-once: only a task running when the process died can run again, so each kill
    # repeats at most TASKS_CONCURRENCY of them.
    assert result.extra_runs <= CONCURRENCY * KILLS, report
    assert result.ran_more_than_once <= result.attempts_over_one, report
    assert result.seconds < 50, report
