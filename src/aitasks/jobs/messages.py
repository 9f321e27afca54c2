"""Builds the Celery message for one job, so the API (and a parent job) can enqueue it inside a Redis script.

The message is Celery's task protocol 2, as ``app.amqp.as_task_v2`` builds it, in the envelope kombu's
Redis transport writes (base64 body, delivery info for the anonymous exchange, which routes by queue
name). Pushing it in the same Lua call that writes the job record makes acceptance atomic: a job is
recorded and queued, or neither.

The fields are filled here rather than by calling ``as_task_v2`` on every submit: that call spends
most of its time on generic options a job never uses (countdown, chords, reprs of arbitrary args) and
was ~12 % of the API's submit time. ``tests/test_message.py`` checks that the result stays identical
to Celery's own builder, so an upgrade of Celery that changes the protocol fails a test, not a worker.
"""

from __future__ import annotations

import base64
import functools
import uuid
from typing import Any

import orjson
from celery.utils.nodenames import anon_nodename

# The name of the one Celery task that runs every job type (worker.runner registers it under this name).
RUN_JOB_TASK = "aitasks.run_job"


@functools.cache
def _origin() -> str:
    return anon_nodename()  # "gen<pid>@<host>", as Celery stamps a message sent from this process


def job_headers(job_id: str, soft_time_limit_s: float, time_limit_s: float) -> dict[str, Any]:
    return {
        "lang": "py", "task": RUN_JOB_TASK, "id": job_id, "shadow": None, "eta": None, "expires": None,
        "group": None, "group_index": None, "retries": 0, "timelimit": [time_limit_s, soft_time_limit_s],
        "root_id": job_id, "parent_id": None, "argsrepr": repr((job_id,)), "kwargsrepr": "{}",
        "origin": _origin(), "ignore_result": False, "replaced_task_nesting": 0, "stamped_headers": None,
        "stamps": {},
    }


def job_body(job_id: str) -> bytes:
    return orjson.dumps([[job_id], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])


def envelope(body: bytes, headers: dict[str, Any], job_id: str, queue: str) -> str:
    return orjson.dumps({
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            "correlation_id": job_id, "reply_to": "", "body_encoding": "base64",
            "delivery_info": {"exchange": "", "routing_key": queue}, "delivery_mode": 2, "priority": 0,
            "delivery_tag": str(uuid.uuid4()),
        },
    }).decode()


def job_message(job_id: str, queue: str, soft_time_limit_s: float, time_limit_s: float) -> str:
    """The message kombu's Redis transport would push for ``run_job.apply_async((job_id,), queue=queue)``."""
    return envelope(job_body(job_id), job_headers(job_id, soft_time_limit_s, time_limit_s), job_id, queue)

