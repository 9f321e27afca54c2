"""Queue depths for /metrics and /api/v1/system: the Redis queue lists' lengths, or RabbitMQ's own counts
of ready messages when it is the broker (AITASKS_BROKER_URL). Jobs still in the Redis outbox on their way
to RabbitMQ (worker/relay.py) are reported apart, as ``aitasks_broker_outbox``."""

from __future__ import annotations

import asyncio
import time

from aitasks.settings import Settings

_CACHE_S = 2.0  # a scrape every second opens one AMQP connection every 2 s at most
_seen: dict[str, tuple[float, list[int] | None]] = {}


def _rabbitmq_counts(url: str) -> list[int]:
    from kombu import Connection

    from aitasks.jobs.broker import broker_queues

    with Connection(url, connect_timeout=2) as connection:
        channel = connection.channel()
        # Declared as the workers declare them (the same arguments: no PRECONDITION_FAILED), so a queue no
        # worker has declared yet counts 0 instead of failing.
        return [int(queue(channel).queue_declare().message_count) for queue in broker_queues(amqp=True)]


async def queue_depths(settings: Settings, redis_lengths: list[int]) -> list[int]:
    """Jobs waiting per queue (keys.QUEUES order): ``redis_lengths``, or RabbitMQ's counts (at most 2 s old).
    RabbitMQ unreachable: the Redis lengths (0); /readyz names the broker."""
    if not settings.amqp_broker:
        return redis_lengths
    url = settings.resolved_broker_url()
    seen = _seen.get(url)
    if seen is None or seen[0] < time.monotonic():
        try:
            counts: list[int] | None = await asyncio.wait_for(asyncio.to_thread(_rabbitmq_counts, url), 2.0)
        except Exception:  # the broker's state is /readyz's to tell
            counts = None
        seen = (time.monotonic() + _CACHE_S, counts)
        _seen[url] = seen
    return seen[1] if seen[1] is not None else redis_lengths
