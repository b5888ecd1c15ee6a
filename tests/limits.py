"""Reading what limited tasks noted (tests/limited_tasks.py): overlaps and start rates."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path


def spans(path: Path) -> dict[str, tuple[float, float, str]]:
    """task id -> (start, end, key), for the tasks that both started and ended."""
    starts: dict[str, tuple[float, str]] = {}
    done: dict[str, tuple[float, float, str]] = {}
    for line in path.read_text().splitlines():
        task_id, what, moment, _pid, *key = line.split(" ")
        if what == "start":
            starts[task_id] = (float(moment), key[0] if key else "")
        else:
            start, name = starts[task_id]
            done[task_id] = (start, float(moment), name)
    return done


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment (an end at the same moment as a start first)."""
    edges = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def most_at_once_by_key(path: Path) -> dict[str, int]:
    by_key: defaultdict[str, list[tuple[float, float]]] = defaultdict(list)
    for start, end, key in spans(path).values():
        by_key[key].append((start, end))
    return {key: most_at_once(intervals) for key, intervals in by_key.items()}


def most_in_window(starts: list[float], window: float) -> int:
    """The most of these moments in any window of `window` seconds (sorted moments)."""
    most = first = 0
    for last, moment in enumerate(starts):
        while moment - starts[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most
