"""Error reports to Sentry when ``SENTRY_DSN`` is set (as seed 004 reported its errors): an unexpected
exception in a job (a bug, not a job failing as designed: a ``JobError``, a time limit, bad input), and
an unexpected error in the API (a 500), each logged and reported with the job's id, type and tenant as
tags. Unset, ``sentry_sdk`` is not even imported.

``SENTRY_ENVIRONMENT`` and ``SENTRY_RELEASE`` apply as the SDK reads them (default: ``AITASKS_ENVIRONMENT``
and ``aitasks@<version>``). No request bodies, headers or user data are sent (``send_default_pii`` off),
and no performance traces: traces are OpenTelemetry's (aitasks/tracing).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from aitasks import __version__

log = logging.getLogger("aitasks")
_enabled = False


def setup(component: str, environment: str) -> bool:
    """Report this process's errors (once per process; a pool process calls it after its fork)."""
    global _enabled
    dsn = os.environ.get("SENTRY_DSN")
    if not dsn or _enabled:
        return False
    import sentry_sdk

    sentry_sdk.init(dsn=dsn, release=os.environ.get("SENTRY_RELEASE") or f"aitasks@{__version__}",
                    environment=os.environ.get("SENTRY_ENVIRONMENT") or environment,
                    send_default_pii=False, traces_sample_rate=0.0)
    sentry_sdk.set_tag("component", component)
    _enabled = True
    log.info("error reports: sent to Sentry (%s)", component)
    return True


@contextmanager
def job_scope(job_id: str, task_type: str, tenant: str) -> Iterator[None]:
    """What is reported while a job runs carries its id, type and tenant."""
    if not _enabled:
        yield
        return
    import sentry_sdk

    with sentry_sdk.new_scope() as scope:
        scope.set_tag("job_id", job_id)
        scope.set_tag("task_type", task_type)
        scope.set_tag("tenant", tenant)
        yield
