"""What the runner does when Redis is unreachable: retry a write through a short outage, and never
let an outage count as the job failing.

With ``task_acks_on_failure_or_timeout`` a task that raises is acknowledged, so a ``ConnectionError``
while the runner reads or writes the record would drop the message and leave the job PENDING for good.
Instead the runner waits until Redis answers again (a backoff, so an outage does not spin) and rejects
the message with ``requeue=True``: kombu puts the same message back on its queue, and the record's state
decides what the redelivery does (a job that ended meanwhile is dropped, as any duplicate).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import NoReturn, TypeVar

import redis
from celery.exceptions import Reject

log = logging.getLogger(__name__)
T = TypeVar("T")

# BusyLoadingError (Redis still loading its append-only file) is a ConnectionError.
REDIS_DOWN: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)
# How long a pool process waits for Redis before giving its message back anyway (kombu then restores it
# when it can); the worker can run nothing without Redis, so holding its slot costs nothing.
WAIT_FOR_REDIS_S = 120.0
# How long an outcome write is retried before the error escapes (and the message is given back).
RETRY_WRITES_S = 60.0


def _sleeps(first_s: float, most_s: float) -> Callable[[], float]:
    delay = first_s

    def next_sleep() -> float:
        nonlocal delay
        current, delay = delay, min(delay * 2, most_s)
        return current

    return next_sleep


def retry_redis(fn: Callable[[], T], for_s: float | None = None) -> T:
    """Outcome writes must land: retry through a short Redis outage instead of losing the result."""
    deadline = time.monotonic() + (RETRY_WRITES_S if for_s is None else for_s)
    sleep = _sleeps(0.2, 2.0)
    while True:
        try:
            return fn()
        except REDIS_DOWN:
            if time.monotonic() > deadline:
                raise
            time.sleep(sleep())


def wait_for_redis(client: redis.Redis, for_s: float) -> bool:
    """Block until Redis answers PING (loaded, not just listening); False if it did not within ``for_s``."""
    deadline = time.monotonic() + for_s
    sleep = _sleeps(0.5, 5.0)
    while True:
        try:
            client.ping()
            return True
        except REDIS_DOWN:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(sleep(), left))


def give_back(client: redis.Redis, job_id: str, exc: BaseException) -> NoReturn:
    """Requeue this delivery: the outage is not the job's failure. Raises ``Reject(requeue=True)``."""
    log.warning("job %s: Redis unreachable (%s); its message goes back to the queue once Redis answers",
                job_id, exc)
    if not wait_for_redis(client, WAIT_FOR_REDIS_S):  # the backoff: no spinning through an outage
        log.error("job %s: Redis still unreachable after %.0fs; giving the message back anyway",
                  job_id, WAIT_FOR_REDIS_S)
    raise Reject(f"Redis unreachable: {exc}", requeue=True)
