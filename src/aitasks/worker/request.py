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

    @property
    def fence(self) -> str:
        """The UPDATE script's fence for a write about this delivery (jobs/end_state.lua): refused once the
        recovery queued the job again (a newer generation), so it never lands on the job's next run."""
        generation = self.kwargs.get("generation", self.args[1] if len(self.args) > 1 else 0)
        return f"gen:{int(generation)}"

    def on_timeout(self, soft: bool, timeout: float) -> None:
        super().on_timeout(soft, timeout)
        if soft or not self.job_id:
            return
        try:
            res = resources()
            job = res.store.get(self.job_id)
            if job is None:
                return
            # Fenced by the generation, and the delivery's end counted only when the write was this
            # delivery's: a job the recovery queued again meanwhile belongs to its new run.
            if res.store.update(self.job_id, {
                "status": Status.FAILURE.value, "message": "Task failed", "finished_at": time.time(),
                "error_type": "TimeLimitExceeded",
                "error_message": f"hard time limit of {timeout:g}s exceeded; the job was killed",
            }, ttl_s=job.retention_s, fence=self.fence) > 0:
                res.store.end_delivery(self.job_id)
        except Exception:
            log.exception("could not record the hard time limit of job %s", self.job_id)

    def on_failure(self, exc_info, send_failed_event=True, return_ok=False):  # type: ignore[no-untyped-def]
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)
        if isinstance(exc, WorkerLostError) and self.job_id:
            # Celery gives the message back to the queue below (reject_on_worker_lost), where an idle worker
            # may take it at once: say so on the record first, so this RETRY never lands on the new run.
            # (A job that ended before its process died refuses it; Celery then acknowledges the message.
            # So does a job the recovery queued again meanwhile, by the generation: this worker was silent
            # past its lease, and the RETRY would land on the run that took over.)
            try:
                resources().store.update(self.job_id, {
                    "status": Status.RETRY.value,
                    "message": "The worker process running this job died; the job was queued again",
                }, fence=self.fence)
            except Exception:
                log.exception("could not record the loss of job %s", self.job_id)
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
