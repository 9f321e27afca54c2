"""The Celery application, configured for long AI jobs that must survive dying workers.

- JSON only; no task events unless Flower asks for them; no result backend: the job record in Redis is
  the truth (Celery's AsyncResult says PENDING for any id, celery#3596).
- Late acknowledgement with reject-on-worker-lost and prefetch 1: a job is acknowledged only after it
  ran, a killed pool process puts it back, and a worker holds one job at a time.
- The visibility timeout sits above the longest hard time limit, so a job still running is never
  handed to a second worker (kombu#337); a worker killed outright gets its job restored after it.
  The caller passes that limit: the worker knows it from the registry it loads anyway, and building
  the app needs no job type.
- With RabbitMQ as the broker (AITASKS_BROKER_URL): quorum queues, publisher confirms, AMQP heartbeats
  (a dead worker's unacknowledged job goes to another once its connection is found dead; no visibility
  timeout), and job messages published by the outbox relay (worker/relay.py), not by the API.
"""

from __future__ import annotations

from celery import Celery
from aitasks.jobs.broker import broker_queues
from aitasks.settings import Settings


def visibility_timeout_s(settings: Settings, longest_limit_s: float) -> int:
    """The configured timeout, else a minute above the longest hard time limit of any job type."""
    if settings.visibility_timeout_s:
        return settings.visibility_timeout_s
    return int(longest_limit_s + 60)


def transport_options(settings: Settings, longest_limit_s: float) -> dict[str, object]:
    if settings.amqp_broker:
        # Publisher confirms: Celery's own publishes (a retry's message) return once RabbitMQ has stored them.
        return {"confirm_publish": True, "connect_timeout": 5}
    return {
        "visibility_timeout": visibility_timeout_s(settings, longest_limit_s),
        "unacked_restore_interval": settings.unacked_restore_interval_s,
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 5,
        "socket_timeout": 30,
        "socket_keepalive": True,
        "health_check_interval": 10,
    }


def create_celery(settings: Settings, longest_limit_s: float) -> Celery:
    app = Celery("aitasks")
    app.conf.update(
        broker_url=settings.resolved_broker_url(),
        broker_connection_retry_on_startup=True,
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        broker_transport_options=transport_options(settings, longest_limit_s),
        broker_heartbeat=settings.broker_heartbeat_s if settings.amqp_broker else 120,  # 120: Celery's default
        worker_detect_quorum_queues=True,  # per-consumer QoS: quorum queues refuse a global prefetch
        result_backend=None,
        task_ignore_result=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.worker_concurrency,
        # No task events by default: three PUBLISHes per job from the consumer that nothing of aitasks reads
        # (the job record is the truth). Flower (`aitasks run --flower`) switches them on in the running
        # workers itself (its periodic enable_events broadcast).
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        # A pool process that preloads models (AITASKS_PRELOAD) needs more than Celery's 4 s to come up.
        worker_proc_alive_timeout=180.0 if settings.preload.strip() else 4.0,
        task_queues=broker_queues(settings.amqp_broker),
        task_default_queue="cpu",
        timezone="UTC",
        enable_utc=True,
    )
    return app

