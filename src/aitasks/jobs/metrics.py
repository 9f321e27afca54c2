"""Job counters kept in Redis, so /metrics sums every worker and API process of a deployment."""

from __future__ import annotations

from typing import Any

import redis

from aitasks.jobs import keys
from aitasks.jobs.models import Status

# Upper bounds (seconds) of the job duration histogram.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TIMELINE_KEEP_S = 2 * 3600


def bucket_label(bound: float) -> str:
    return repr(bound)


def record_outcome(r: redis.Redis, job_type: str, status: Status, duration_s: float | None, now: float) -> None:
    pipe = r.pipeline(transaction=False)
    add_outcome(pipe, job_type, status, duration_s, now)
    pipe.execute()


def add_outcome(pipe: Any, job_type: str, status: Status, duration_s: float | None, now: float) -> None:
    """Queue the counter updates on a pipeline (sync or asyncio); the caller executes it."""
    minute = str(int(now // 60) * 60)
    pipe.hincrby(keys.METRICS_JOBS, f"{job_type}|{status.value}", 1)
    timeline = keys.metrics_timeline("finished" if status is Status.SUCCESS else status.value.lower())
    pipe.hincrby(timeline, minute, 1)
    pipe.expire(timeline, TIMELINE_KEEP_S)
    if duration_s is not None:
        key = keys.metrics_duration(job_type)
        for bound in DURATION_BUCKETS:
            if duration_s <= bound:
                pipe.hincrby(key, bucket_label(bound), 1)
        pipe.hincrby(key, "+Inf", 1)
        pipe.hincrbyfloat(key, "sum", duration_s)
