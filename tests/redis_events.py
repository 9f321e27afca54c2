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
