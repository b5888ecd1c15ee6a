"""What the benchmark scripts share: percentiles of their samples."""

from __future__ import annotations


def percentile(values: list[float], pct: float) -> float:
    """The sample at `pct` (0..1) of the sorted values, nearest-rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct))]
