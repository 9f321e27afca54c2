"""Builds the Celery message for one job, so the API can enqueue it inside its own Redis script.

The headers and body come from Celery's own protocol-2 builder (``app.amqp.as_task_v2``); the
envelope is the one kombu's Redis transport writes (base64 body, delivery info for the anonymous
exchange, which routes by queue name). Pushing it in the same Lua call that writes the job record
makes acceptance atomic: a job is recorded and queued, or neither.
"""

from __future__ import annotations

import base64
import uuid

import orjson
from celery import Celery

from aitasks.worker.celery_app import RUN_JOB_TASK


def job_message(app: Celery, job_id: str, queue: str, soft_time_limit_s: float, time_limit_s: float) -> str:
    task = app.amqp.as_task_v2(
        job_id, RUN_JOB_TASK, args=(job_id,), kwargs={},
        time_limit=time_limit_s, soft_time_limit=soft_time_limit_s,
    )
    body = orjson.dumps(list(task.body))
    properties = dict(task.properties)
    properties.update(
        body_encoding="base64",
        delivery_info={"exchange": "", "routing_key": queue},
        delivery_mode=2,
        priority=0,
        delivery_tag=str(uuid.uuid4()),
    )
    return orjson.dumps({
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": task.headers,
        "properties": properties,
    }).decode()
