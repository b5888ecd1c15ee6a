"""Prometheus metrics, true for the whole service whichever process is scraped.

Gauges (tasks by status and type, queue depth, oldest wait) are read from the store at each
scrape. Counters and the attempt-duration histogram are counted in memory by each process
and added to the store's `metric_counts` every couple of seconds, so they keep counting
across restarts, purges and `--workers N`.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from store import Store
from tasks_service.models import TaskStatus
from tasks_service.runtime.waits import REASONS, WaitExplainer

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
_BUCKET_LABELS = (*(f"{b:g}" for b in DURATION_BUCKETS), "+Inf")
_DURATION, _DURATION_SUM, _FINISHED, _RETRIES = "duration", "duration_sum", "finished", "retries"


class MetricsRecorder:
    """What this process saw since its last flush; cheap enough to call for every attempt."""

    def __init__(self) -> None:
        self._deltas: defaultdict[tuple[str, str, str], float] = defaultdict(float)

    def attempt_ended(self, name: str, status: TaskStatus, seconds: float) -> None:
        """An attempt ended: PENDING means it failed and will be retried."""
        bucket = _BUCKET_LABELS[bisect.bisect_left(DURATION_BUCKETS, seconds)]
        self._deltas[(_DURATION, name, bucket)] += 1
        self._deltas[(_DURATION_SUM, name, "")] += seconds
        if status is TaskStatus.PENDING:
            self._deltas[(_RETRIES, name, "")] += 1
        else:
            self._deltas[(_FINISHED, name, status.value)] += 1

    async def flush(self, store: Store) -> None:
        if not self._deltas:
            return
        deltas, self._deltas = dict(self._deltas), defaultdict(float)
        try:
            await store.add_metric_counts(deltas)
        except BaseException:
            for key, value in deltas.items():  # keep them for the next flush
                self._deltas[key] += value
            raise


async def render(store: Store, recorder: MetricsRecorder, waits: WaitExplainer) -> bytes:
    """The Prometheus text exposition of the whole service."""
    await recorder.flush(store)
    counts = await store.task_counts()
    waiting = await waits.due_counts()
    depth, oldest_run_at = await store.queue_stats()
    stored = await store.metric_counts()
    now = time.time()

    families: list[Metric] = []
    tasks = GaugeMetricFamily(
        "tasks", "Tasks in the store, by status and task type", labels=["status", "name"]
    )
    for status, name, count in counts:
        tasks.add_metric([status, name], count)
    families.append(tasks)
    running = GaugeMetricFamily(
        "tasks_running", "Tasks running now in every process, by task type", labels=["name"]
    )
    for status, name, count in counts:
        if status == TaskStatus.RUNNING.value:
            running.add_metric([name], count)
    families.append(running)
    held = GaugeMetricFamily(
        "tasks_waiting",
        "Pending tasks, by why they have not started (see waiting_for)",
        labels=["reason"],
    )
    for reason in REASONS:
        held.add_metric([reason], waiting.get(reason, 0))
    families.append(held)
    families.append(GaugeMetricFamily("tasks_queue_depth", "Pending tasks due to run now", depth))
    age = 0.0 if oldest_run_at is None else max(0.0, now - oldest_run_at)
    families.append(
        GaugeMetricFamily(
            "tasks_oldest_pending_age_seconds",
            "How long the longest-waiting due task has waited to start",
            age,
        )
    )
    families.extend(_counted_families(stored))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return generate_latest(registry)


def _counted_families(stored: list[tuple[str, str, str, float]]) -> list[Metric]:
    finished = CounterMetricFamily(
        "tasks_finished",
        "Tasks that ended, by task type and final status",
        labels=["name", "status"],
    )
    retries = CounterMetricFamily(
        "tasks_retries", "Failed attempts that were retried, by task type", labels=["name"]
    )
    buckets: defaultdict[str, dict[str, float]] = defaultdict(dict)
    sums: dict[str, float] = {}
    for metric, name, label, value in stored:
        if metric == _FINISHED:
            finished.add_metric([name, label], value)
        elif metric == _RETRIES:
            retries.add_metric([name], value)
        elif metric == _DURATION:
            buckets[name][label] = value
        elif metric == _DURATION_SUM:
            sums[name] = value
    durations = HistogramMetricFamily(
        "tasks_attempt_duration_seconds",
        "How long attempts ran, by task type",
        labels=["name"],
    )
    for name, per_bucket in sorted(buckets.items()):
        cumulative, total = [], 0.0
        for label in _BUCKET_LABELS:
            total += per_bucket.get(label, 0.0)
            cumulative.append((label, total))
        durations.add_metric([name], cumulative, sum_value=sums.get(name, 0.0))
    return [finished, retries, durations]


class _Snapshot:
    """A collector that hands out families already read (prometheus_client collects sync)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)
