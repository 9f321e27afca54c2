"""What Celery prints outside the log, made log lines or settled where it comes from, so a worker's
output is the service's JSON log and nothing else.

- The start-up banner: off (``--quiet``); `aitasks worker` logs one line with the same facts.
- ``safe_say`` (``worker: Warm shutdown (MainProcess)`` and the Ctrl-C hints) writes to fd 1 directly:
  those lines go to the log instead.
- The ``CPendingDeprecationWarning`` on every broker connection loss: Celery warns whenever
  ``worker_cancel_long_running_tasks_on_connection_loss`` is False, set or not, and its log set-up turns
  its pending-deprecation warnings to "always" after any filter of ours. We set it False on purpose
  (celery_app.py), so that one warning is ignored once Celery's set-up is done.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

from celery import signals
from celery.apps import worker as celery_worker
from celery.exceptions import CPendingDeprecationWarning

log = logging.getLogger("celery.apps.worker")


def _say(msg: str, f: Any = None) -> None:
    # Called from signal handlers too; logging's handler lock is reentrant, as Celery's own handlers rely on.
    log.info("%s", msg.strip())


def _settle_warnings(**_: Any) -> None:
    warnings.filterwarnings("ignore", message=r"\s*In Celery 5\.1 we introduced an optional breaking change",
                            category=CPendingDeprecationWarning)


def quiet_celery() -> None:
    """Call before ``worker_main``."""
    celery_worker.safe_say = _say
    signals.celeryd_after_setup.connect(_settle_warnings, weak=False)
