"""The queues as the broker declares them, shared by the workers' Celery app (worker/celery_app.py), the
outbox relay (worker/relay.py) and the API's queue depths (api/broker_depth.py): kombu only, no Celery."""

from __future__ import annotations

from kombu import Exchange, Queue

from aitasks.jobs.keys import QUEUES


def broker_queues(amqp: bool) -> list[Queue]:
    """The cpu and gpu queues. On RabbitMQ: quorum queues (replicated, durable; a message is confirmed once
    stored), bound to topic exchanges of their names, which route by the queue's name as the direct ones
    do and which Celery's native delayed delivery (a retry's countdown, kept in RabbitMQ rather than in
    the worker) accepts; it refuses direct exchanges."""
    if amqp:
        return [Queue(q, Exchange(q, type="topic"), routing_key=q, durable=True,
                      queue_arguments={"x-queue-type": "quorum"}) for q in QUEUES]
    return [Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES]
