"""Starts the recorder (recorder.py) and the history retention sweep (retention.py) as threads of each
worker's main process, beside the webhook sender:
every worker host records, a dead worker's unrecorded batch is claimed by another, and there is no
extra process to supervise. Imported by ``aitasks worker`` only (the API never imports Celery)."""

from __future__ import annotations

from typing import Any

import redis
from celery import signals

from aitasks.settings import get_settings
from aitasks.jobs.artifacts import open_artifacts
from aitasks.store.recorder import Recorder, RecorderThread
from aitasks.store.retention import RetentionThread

_thread: RecorderThread | None = None
_retention: RetentionThread | None = None


@signals.worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    global _thread, _retention
    settings = get_settings()
    client = redis.Redis.from_url(settings.resolved_redis_url(), socket_connect_timeout=3, socket_timeout=10,
                                  health_check_interval=15)
    name = getattr(sender, "hostname", None)
    _thread = RecorderThread(Recorder(client, settings.resolved_database_url, consumer=name,
                                      batch=settings.recorder_batch, claim_idle_s=settings.recorder_claim_idle_s))
    _thread.start()
    _retention = RetentionThread(client, settings.resolved_database_url, settings.history_retention_days,
                                 settings.history_sweep_s, open_artifacts(settings).delete_job)
    _retention.start()


@signals.worker_shutting_down.connect
def _stop(**_: Any) -> None:
    if _thread is not None:
        _thread.stop()
    if _retention is not None:
        _retention.stop()
