"""Starts the recorder (recorder.py) as a child process of each worker's main process, and the history
retention sweep (retention.py) as a thread of it, beside the webhook sender: every worker host records, a
dead worker's unrecorded batch is claimed by another, and there is nothing extra to deploy. Imported by
``aitasks worker`` only (the API never imports Celery).

A process, not a thread: the worker's main process hands every message to the pool (prefetch 1), and a
recorder thread writing a batch held its GIL meanwhile, so the pool waited (history on cost 12-35% of the
no-op throughput; ``bench/history_switch.py``). The child stops with the worker, and stops by itself
within a second when the worker is gone without saying so (SIGKILL): it watches its parent's pid.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from typing import Any

import redis
from celery import signals

from aitasks.jobs.artifacts import open_artifacts
from aitasks.logs import process_name
from aitasks.settings import get_settings
from aitasks.store.retention import RetentionThread

log = logging.getLogger("aitasks.store")
RECORDER_NICE = 10
_process: subprocess.Popen[bytes] | None = None
_retention: RetentionThread | None = None


@signals.worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    global _process, _retention
    settings = get_settings()
    if not settings.history_enabled:  # no hand-off, nothing to record or sweep
        return
    name = getattr(sender, "hostname", None) or f"worker.{os.getpid()}"
    # Its log lines carry the worker's process name (it writes to the worker's stderr); the logger says recorder.
    # Niced: on a host whose CPUs the jobs keep busy, recording waits for them (it is durable in the stream and
    # catches up when they pause), not the jobs for it.
    _process = subprocess.Popen([sys.executable, "-m", "aitasks.store.recorder", "--consumer", name,
                                 "--parent", str(os.getpid()), "--log-as", process_name() or "recorder",
                                 "--nice", str(RECORDER_NICE)])
    client = redis.Redis.from_url(settings.resolved_redis_url(), socket_connect_timeout=3, socket_timeout=10,
                                  health_check_interval=15)
    _retention = RetentionThread(client, settings.resolved_database_url, settings.history_retention_days,
                                 settings.history_sweep_s, open_artifacts(settings).delete_job)
    _retention.start()


@signals.worker_shutting_down.connect
def _stop(**_: Any) -> None:
    if _retention is not None:
        _retention.stop()
    if _process is not None and _process.poll() is None:
        _process.terminate()  # it finishes the batch in hand (acknowledged only once written) and exits
        try:
            _process.wait(15)
        except subprocess.TimeoutExpired:
            log.warning("job history: the recorder did not stop in 15 s; killed (its batch is taken over)")
            _process.kill()
