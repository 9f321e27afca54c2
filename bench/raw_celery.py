"""The baseline for a job's round trip: plain Celery, a no-op task, a Redis broker and result backend.

The worker runs as ``celery -A bench.raw_celery worker`` with ``BENCH_RAW_REDIS_URL`` set, with the
same pool and concurrency as the aitasks worker it is compared with, and the same reliability settings
as aitasks' (worker/celery_app.py): late acknowledgement, reject on worker lost, prefetch 1; a Redis
result backend (which aitasks does without: its job record is the truth); Celery's defaults otherwise.
The bench process builds its own client app with ``make_app(url)``.
"""

from __future__ import annotations

import os

from celery import Celery

NOOP = "bench.noop"


def make_app(url: str) -> Celery:
    app = Celery("bench_raw", broker=url, backend=url, set_as_current=False)
    app.conf.update(
        task_serializer="json", result_serializer="json", accept_content=["json"],
        broker_connection_retry_on_startup=True, task_default_queue="bench",
        worker_hijack_root_logger=True,
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
    )

    @app.task(name=NOOP, shared=False)
    def noop() -> None:
        return None

    return app


# Never a default on 6379: without the variable this app points at a port nothing listens on.
app = make_app(os.environ.get("BENCH_RAW_REDIS_URL", "redis://127.0.0.1:1/0"))
