"""Job counters kept in Redis, so /metrics sums every worker and API process of a deployment.

The UPDATE script (scripts.py) counts each job as it reaches a terminal state, in the same atomic step.
"""

from __future__ import annotations

from collections.abc import Mapping


# Upper bounds (seconds) of the job duration histogram.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TIMELINE_KEEP_S = 2 * 3600


def bucket_label(bound: float) -> str:
    return repr(bound)


def cumulative_histogram(own: Mapping[str, str], legacy: Mapping[str, str]
                         ) -> tuple[list[tuple[float, int]], int, float]:
    """Prometheus' cumulative buckets, their count (+Inf) and the sum, from a type's duration hash (each job
    counted once, in its own bucket: jobs/metrics_end.lua) plus what an older release kept cumulative
    (``keys.metrics_duration_cumulative``). Returns ([(bound, jobs at or under it)], count, sum)."""
    buckets: list[tuple[float, int]] = []
    running = 0
    for bound in DURATION_BUCKETS:
        label = bucket_label(bound)
        running += int(own.get(label, 0))
        buckets.append((bound, running + int(legacy.get(label, 0))))
    count = running + int(own.get("+Inf", 0)) + int(legacy.get("+Inf", 0))
    return buckets, count, float(own.get("sum", 0)) + float(legacy.get("sum", 0))
