"""Hooks in the worker's main process for what the pool child cannot record itself.

When the hard time limit kills a job, or the pool process dies under it, the child never gets to
write the outcome; the main process does it here.
"""

from __future__ import annotations

import logging
import time

from billiard.exceptions import WorkerLostError
from celery.worker.request import Request

from aitasks.jobs.models import Status
from aitasks.worker.resources import resources

log = logging.getLogger(__name__)


class JobRequest(Request):
    @property
    def job_id(self) -> str | None:
        args = self.args
        return args[0] if args else None

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft or not self.job_id:
            return
        try:
            res = resources()
            job = res.store.get(self.job_id)
            if job is None:
                return
            res.store.end_delivery(self.job_id)
            res.store.update(self.job_id, {
                "status": Status.FAILURE.value, "message": "Task failed", "finished_at": time.time(),
                "error_type": "TimeLimitExceeded",
                "error_message": f"hard time limit of {timeout:g}s exceeded; the job was killed",
            }, ttl_s=job.retention_s)
        except Exception:
            log.exception("could not record the hard time limit of job %s", self.job_id)

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):  # type: ignore[no-untyped-def]
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)
        if isinstance(exc, WorkerLostError) and self.job_id:
            # Celery gives the message back to the queue below (reject_on_worker_lost), where an idle worker
            # may take it at once: say so on the record first, so this RETRY never lands on the new run.
            # (A job that ended before its process died refuses it; Celery then acknowledges the message.)
            try:
                resources().store.update(self.job_id, {
                    "status": Status.RETRY.value,
                    "message": "The worker process running this job died; the job was queued again",
                })
            except Exception:
                log.exception("could not record the loss of job %s", self.job_id)
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
