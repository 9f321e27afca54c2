"""What a job function gets: progress reports, cancellation checks, artifact storage, child jobs and the
few reads of its tenant's other records a job type needs. Job code uses only these methods: the stores
behind them stay private to this module."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from datetime import date
from pathlib import Path

import redis

from aitasks.errors import JobCancelled
from aitasks.jobs import keys
from aitasks.jobs.artifacts import ArtifactBackend
from aitasks.jobs.files import FileRef
from aitasks.jobs.models import Artifact, Job
from aitasks.jobs.store import JobStore
from aitasks.jobs.usage import UsageRow, read_usage
from aitasks.tracing.job_spans import StageSpans
from aitasks.worker.children import ChildSpec, Deferred, fan_out
from aitasks.worker.progress import ProgressWriter

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.2  # at most this often a progress write (and event) per job
CANCEL_CHECK_INTERVAL_S = 0.1


class JobFenced(JobCancelled):
    """This run lost its job: the recovery queued it again after this worker's lease expired (it was
    stopped or cut off), and another run holds it now. Its writes are refused; the run stops. A
    ``JobCancelled``, so a job function's cleanup for a cancel runs for it too."""


class JobContext:
    """Passed to every job function. Bookkeeping failures (Redis briefly away) never break the job."""

    def __init__(self, job: Job, store: JobStore, artifacts: ArtifactBackend, attempt: int, delivery: int,
                 fence: str = "", last_write: float = 0.0):
        """``last_write``: time.monotonic() of the run's last write (the runner's claim): the first progress
        report is written once the throttle's interval has passed since (worker/progress.py)."""
        self.job = job
        self.fence = fence  # 'run:<token>' of this run (jobs/end_state.lua); '' writes unfenced
        self.job_id = job.id
        self.attempt = attempt
        self.delivery = delivery
        self._store = store
        self._artifacts = artifacts
        self._saved: dict[str, Artifact] = {}
        self._last_cancel_check = last_write  # (the claim read the cancel flag)
        self._progress = job.progress
        self._writer = ProgressWriter(store, job.id, fence, PROGRESS_INTERVAL_S, last_write)
        self._stages = StageSpans()

    # --- progress --------------------------------------------------------------------------------

    def progress(self, percent: float, message: str = "", stage: str | None = None) -> None:
        """Report progress (0-100, never backwards) with a human message; also checks for cancel.

        ``stage``: the step the job is in, for machines (a document's ``embed``); None for none.
        Throttled: at most one write per PROGRESS_INTERVAL_S, the job never waiting for one it held back
        (worker/progress.py)."""
        value = max(self._progress, min(99, int(percent)))
        self._progress = value
        self._stages.enter(stage)
        if self._writer.report(value, message, stage):
            self._last_cancel_check = time.monotonic()  # the write read the cancel flag
        self._raise_if_told()
        self.check_cancel()

    def flush(self) -> None:
        """Write the report held back, now."""
        self._writer.flush()
        self._raise_if_told()

    def end_progress(self) -> dict[str, str]:
        """Stop writing progress (the runner's end write follows); the stage of a report never written,
        for the end write to record."""
        report = self._writer.close()
        return {} if report is None else {"stage": report[2] or ""}

    def _raise_if_told(self) -> None:
        if self._writer.fenced:
            raise JobFenced("this run lost the job to a newer one")
        if self._writer.cancelled:
            raise JobCancelled("cancelled by request")

    # --- cancellation ----------------------------------------------------------------------------

    def check_cancel(self) -> None:
        """Raise JobCancelled if a client asked to cancel this job. Cheap: checks Redis at most every 100 ms."""
        self._raise_if_told()
        now = time.monotonic()
        if now - self._last_cancel_check < CANCEL_CHECK_INTERVAL_S:
            return
        self._last_cancel_check = now
        try:
            cancel, token = self._store.r.hmget(keys.job(self.job_id), "cancel_requested_at", "run_token")
        except redis.RedisError as exc:
            log.warning("cancel flag of job %s not read: %s", self.job_id, exc)
            return
        if self.fence and token is not None and (token.decode() if isinstance(token, bytes) else token) != \
                self.fence.removeprefix("run:"):
            raise JobFenced("this run lost the job to a newer one")
        if cancel:
            raise JobCancelled("cancelled by request")

    def sleep(self, seconds: float) -> None:
        """Sleep, waking to check for cancellation."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, CANCEL_CHECK_INTERVAL_S))
            self.check_cancel()

    # --- child jobs (see worker/children.py) ------------------------------------------------------

    def fan_out(self, specs: list[ChildSpec], waiting_message: str | None = None) -> Deferred:
        """Create and queue child jobs once (a redelivery creates none); return the result to return."""
        return fan_out(self.job, self._store, self._artifacts, specs, waiting_message, self.check_cancel)

    def children(self) -> list[Job | None] | None:
        """This job's children in order (None for an expired one), or None before ``fan_out``."""
        return self._store.children(self.job_id)

    def read_child_file(self, child: Job, name: str) -> bytes:
        """An artifact of one of this job's children (e.g. its result image)."""
        if child.parent != self.job_id:
            raise ValueError(f"job {child.id} is not a child of {self.job_id}")
        return self._artifacts.read(child.id, name)

    # --- files -----------------------------------------------------------------------------------

    def save_artifact(self, name: str, data: bytes, media_type: str | None = None) -> Artifact:
        """Store an output file under this job; saving the same name again replaces it."""
        artifact = self._artifacts.save(self.job_id, name, data, media_type)
        self._saved[name] = artifact
        return artifact

    def input_path(self, ref: FileRef) -> Path:
        """An input as a real file, for a library that wants a path: the stored file in a folder store;
        with S3, a copy in this job's scratch folder on this host, removed when the job's run ends."""
        return self._artifacts.local_copy(self.job_id, ref.artifact, self.scratch)

    @property
    def scratch(self) -> Path:
        # One name per job and process: a context running inside this job (reports' SubContext) shares it.
        return Path(tempfile.gettempdir()) / f"aitasks-job-{self.job_id}-{os.getpid()}"

    def close(self) -> None:
        """Remove the job's scratch folder (the runner calls it once the run ends, however it ends)."""
        self._writer.close()
        self._stages.close()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def read_input(self, ref: FileRef) -> bytes:
        return self._artifacts.read(self.job_id, ref.artifact)

    @property
    def artifacts(self) -> list[Artifact]:
        return list(self._saved.values())

    # --- the tenant's other records ------------------------------------------------------------------

    def tenant_job(self, job_id: str) -> Job | None:
        """A job of this job's tenant (e.g. one an export reports on): None when unknown, expired or
        another tenant's, which a caller cannot tell apart."""
        job = self._store.get(job_id)
        return job if job is not None and job.tenant == self.job.tenant else None

    def read_job_file(self, job: Job, name: str) -> bytes:
        """An artifact of a job of this job's tenant (one ``tenant_job`` returned)."""
        if job.tenant != self.job.tenant:
            raise ValueError(f"job {job.id} is not a job of tenant {self.job.tenant}")
        return self._artifacts.read(job.id, name)

    def tenant_usage(self, first: date, last: date) -> list[UsageRow]:
        """The usage counters of this job's tenant for the days first..last (see jobs/usage.py)."""
        return read_usage(self._store.r, self.job.tenant, first, last)

    def document_owner(self) -> str | None:
        """The job id this job's document record names now (None without a record): a document
        ingestion checks it is still the owner before writing. Raises redis.RedisError."""
        if not self.job.document:
            return None
        owner = self._store.r.hget(self.job.document, "task_id")
        return owner.decode() if isinstance(owner, bytes) else owner

    # --- for a context acting on this job's behalf ---------------------------------------------------

    @property
    def percent(self) -> int:
        """The progress reported so far (what a cancelled job's record keeps)."""
        return self._progress

    def backing_stores(self) -> tuple[JobStore, ArtifactBackend]:
        """The stores this context works through, for a context that runs an operation inside this job
        (reports.common.SubContext): it reads the same inputs and writes to the same record."""
        return self._store, self._artifacts
