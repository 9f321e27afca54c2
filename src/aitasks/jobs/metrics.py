"""Job counters kept in Redis, so /metrics sums every worker and API process of a deployment.

The UPDATE script (scripts.py) counts each job as it reaches a terminal state, in the same atomic step.
"""

from __future__ import annotations


# Upper bounds (seconds) of the job duration histogram.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
TIMELINE_KEEP_S = 2 * 3600


def bucket_label(bound: float) -> str:
    return repr(bound)
