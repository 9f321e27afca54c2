"""A tenant's usage over a period, from the durable per-day counters the UPDATE script writes.

Job records expire after their retention (an hour by default), so cost reports cannot list jobs.
Instead, when a job reaches a terminal state, the UPDATE script adds it, in the same atomic step, to
the hash ``keys.usage(tenant, day)`` of the UTC day it finished: ``type|queue|jobs``,
``type|queue|seconds`` (compute seconds: finished_at - started_at; 0 for a job that never started)
and ``type|queue|status:<STATUS>``. Those hashes live ``keys.USAGE_TTL_S`` (400 days).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import redis

from aitasks.jobs import keys

MAX_DAYS = keys.USAGE_TTL_S // 86400


@dataclass
class UsageRow:
    """One job type on one queue over one day (or, summed, over a period)."""

    day: str
    job_type: str
    queue: str
    jobs: int = 0
    seconds: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)


def days(first: date, last: date) -> list[date]:
    """Every UTC day from ``first`` to ``last``, both included."""
    if last < first:
        return []
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def parse_hash(day: str, raw: dict[Any, Any]) -> list[UsageRow]:
    rows: dict[tuple[str, str], UsageRow] = {}
    for k, v in raw.items():
        name = k.decode() if isinstance(k, bytes) else str(k)
        value = v.decode() if isinstance(v, bytes) else str(v)
        job_type, sep1, rest = name.partition("|")
        queue, sep2, what = rest.partition("|")
        if not (sep1 and sep2):
            continue
        row = rows.setdefault((job_type, queue), UsageRow(day, job_type, queue))
        if what == "jobs":
            row.jobs = int(value)
        elif what == "seconds":
            row.seconds = float(value)
        elif what.startswith("status:"):
            row.statuses[what.removeprefix("status:")] = int(value)
    return sorted(rows.values(), key=lambda r: (r.job_type, r.queue))


def read_usage(client: redis.Redis, tenant: str, first: date, last: date) -> list[UsageRow]:
    """The tenant's rows for each day from ``first`` to ``last`` (UTC, both included), day by day."""
    span = days(first, last)
    if len(span) > MAX_DAYS:
        raise ValueError(f"a usage period is at most {MAX_DAYS} days (counters are kept that long)")
    pipe = client.pipeline(transaction=False)
    for d in span:
        pipe.hgetall(keys.usage(tenant, d.isoformat()))
    out: list[UsageRow] = []
    for d, raw in zip(span, pipe.execute()):
        out.extend(parse_hash(d.isoformat(), raw or {}))
    return out


def totals(rows: list[UsageRow], by: str) -> dict[str, UsageRow]:
    """Rows summed over days by ``job_type``, ``queue`` or ``day``; key -> summed row."""
    out: dict[str, UsageRow] = {}
    for row in rows:
        key = getattr(row, by)
        acc = out.setdefault(key, UsageRow(
            day=row.day if by == "day" else "", job_type=row.job_type if by == "job_type" else "",
            queue=row.queue if by == "queue" else ""))
        acc.jobs += row.jobs
        acc.seconds += row.seconds
        statuses: defaultdict[str, int] = defaultdict(int, acc.statuses)
        for status, n in row.statuses.items():
            statuses[status] += n
        acc.statuses = dict(statuses)
    return dict(sorted(out.items()))
