"""Helpers of the tests on both brokers (tests/test_broker_amqp.py, tests/test_broker_amqp_faults.py; their
fixtures ``rabbit`` and ``broker_env`` are in conftest.py): a deployment's settings for Redis or RabbitMQ as the
broker, and ways to look into the outbox. One private RabbitMQ per test module, so a module's deployment
still running never consumes another module's jobs (they would share its vhost); ``empty_queues`` drops
what an earlier deployment of the same module left queued."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from kombu import Connection

from aitasks.jobs import keys
from aitasks.jobs.broker import broker_queues
from aitasks.jobs.messages import job_message
from rabbitmq_server import RabbitServer
from stack import Stack

BROKERS = ["redis", "amqp"]


def empty_queues(server: RabbitServer) -> None:
    """Nothing left in the cpu and gpu queues by an earlier test's deployment (one broker per module)."""
    with Connection(server.url, connect_timeout=5) as conn:
        channel = conn.channel()
        for queue in broker_queues(amqp=True):
            bound = queue(channel)
            bound.declare()
            bound.purge()


def settings_for_broker(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "redis":
        return {}
    server: RabbitServer = request.getfixturevalue("rabbit")
    empty_queues(server)
    return {"AITASKS_BROKER_URL": server.url}


def amqp(stack: Stack) -> bool:
    return "AITASKS_BROKER_URL" in stack.extra_env


def push_duplicate(stack: Stack, task_id: str, queue: str = "cpu") -> None:
    """A second copy of a job's message, sent the way the first went: onto the queue list (Redis as the
    broker) or into the outbox the relays publish to RabbitMQ from."""
    with redis.Redis.from_url(stack.redis_server.url) as r:
        soft, hard = r.hmget(keys.job(task_id), "soft_time_limit_s", "time_limit_s")
        r.lpush(keys.queue_list(queue, amqp(stack)), job_message(task_id, queue, float(soft), float(hard)))


def outbox_drained(stack: Stack) -> Callable[[], bool]:
    def drained() -> bool:
        with redis.Redis.from_url(stack.redis_server.url) as r:
            names = r.smembers(keys.BROKER_RELAYS)
            return r.llen(keys.BROKER_OUTBOX) == 0 and all(
                r.llen(keys.broker_inflight(n.decode())) == 0 for n in names)
    return drained
