"""A job's events as a test hears them: subscribed before the changes are made, then drained."""

from __future__ import annotations

import json
from typing import Any

import redis

from aitasks.jobs import keys


def subscribed(r: redis.Redis, job_id: str) -> Any:
    """A subscription to the job's events, listening already (so no change made after it is missed)."""
    ps = r.pubsub()
    ps.subscribe(keys.events(job_id))
    assert ps.get_message(timeout=5)["type"] == "subscribe"
    return ps


def drain(ps: Any) -> list[dict[str, Any]]:
    """The events published so far, in order (until none comes for half a second); then unsubscribed."""
    out = []
    while (m := ps.get_message(timeout=0.5)) is not None:
        out.append(json.loads(m["data"]))
    ps.close()
    return out


def every_job_subscribed(r: redis.Redis) -> Any:
    """A subscription to every job's events (for a job whose id is not known yet), listening already. Keep
    ``r`` while it is used: a client let go closes its pool's connections, this one's too."""
    ps = r.pubsub()
    ps.psubscribe(keys.EVENTS_PATTERN)
    assert ps.get_message(timeout=5)["type"] == "psubscribe"
    return ps


def drain_job(ps: Any, job_id: str) -> list[dict[str, Any]]:
    """``drain`` of ``every_job_subscribed``: ``job_id``'s events so far, in order; then unsubscribed."""
    out = []
    while (m := ps.get_message(timeout=0.5)) is not None:
        if m["type"] == "pmessage" and (event := json.loads(m["data"]))["task_id"] == job_id:
            out.append(event)
    ps.close()
    return out


def states(events: list[dict[str, Any]]) -> list[str]:
    """The statuses the events went through, repeats folded (a run's progress reports are one PROCESSING)."""
    statuses = [e["status"] for e in events]
    return [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]]
