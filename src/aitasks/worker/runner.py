"""The one Celery task that runs every job type: load the record, run the type's function, record the outcome."""

from __future__ import annotations

import logging
import math
import random
import time
import uuid
from typing import Any, NoReturn

from billiard.exceptions import SoftTimeLimitExceeded
from celery import Task, signals
from celery.exceptions import Reject
from pydantic import ValidationError

from aitasks import error_reports, tracing
from aitasks.errors import JobCancelled, JobError, TransientJobError
from aitasks.jobs.messages import RUN_JOB_TASK
from aitasks.jobs.models import Job, Status
from aitasks.logs import job_log_context
from aitasks.processors.registry import JobType, load_all
from aitasks.settings import get_settings
from aitasks.tracing.job_spans import mark_end, run_span
from aitasks.worker.celery_app import create_celery
from aitasks.worker.children import Deferred
from aitasks.worker.context import JobContext, JobFenced
from aitasks.worker.redis_outage import REDIS_DOWN, give_back, retry_redis
from aitasks.worker.resources import resources

log = logging.getLogger(__name__)
app = create_celery(get_settings(), load_all().longest_time_limit_s(get_settings()))


def backoff_s(jt: JobType, attempt: int) -> float:
    """Exponential backoff with full jitter: base * 2^(attempt-1), capped, times a random factor in [0.5, 1]."""
    raw = min(jt.retry_backoff_max_s, jt.retry_backoff_s * (2 ** (attempt - 1)))
    return raw * random.uniform(0.5, 1.0)


class Delivery:
    """This delivery of the job's message, counted by START: its end is counted once, by the run's last
    write (the end or the retry, in the same script) or, when the run writes none, by ``close``."""

    def __init__(self, job_id: str, counted: bool):
        self.job_id = job_id
        self.open = counted

    def close(self) -> None:
        if self.open:
            retry_redis(lambda: resources().store.end_delivery(self.job_id))
            self.open = False


def finish(job: Job, status: Status, message: str, fence: str = "", delivery: Delivery | None = None,
           **fields: Any) -> bool:
    """Write a terminal state (only if the job is not finished already, and, with ``fence``, only while this
    run still holds the job) and count it; with an open ``delivery``, its end is counted in the same step."""
    res = resources()
    now = time.time()
    values: dict[str, Any] = {"status": status.value, "message": message, "finished_at": now, **fields}
    if status is Status.SUCCESS:
        values["progress"] = 100
    # The update script counts the outcome for /metrics in the same atomic step.
    if delivery is not None and delivery.open:
        written, _ = retry_redis(lambda: res.store.run_update(job.id, values, fence, job.retention_s, True))
        delivery.open = False
    else:
        written = retry_redis(lambda: res.store.update(job.id, values, ttl_s=job.retention_s, fence=fence))
    mark_end(status.value if written > 0 else f"{status.value} (not recorded)")
    if written == -2:
        log.warning("job %s: this run lost the job (taken back after its lease expired); its %s is not "
                    "recorded", job.id, status.value)
    return written > 0


def error_fields(exc: BaseException, error_type: str | None = None) -> dict[str, str]:
    return {"error_type": error_type or type(exc).__name__, "error_message": str(exc) or type(exc).__name__}


@app.task(bind=True, name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True,
          Request="aitasks.worker.request:JobRequest", max_retries=None)
def run_job(self: Task, job_id: str, generation: int = 0) -> None:
    """``generation``: set on a message the recovery queued again (worker/lease.py); an older copy is stale."""
    with job_log_context(job_id=job_id):
        try:
            execute(self, job_id, generation)
        except REDIS_DOWN as exc:  # not the job failing: the message goes back (else it would be acked)
            give_back(resources().redis, job_id, exc)


def execute(task: Task, job_id: str, generation: int = 0) -> None:
    res = resources()
    store = res.store
    attempt = task.request.retries + 1
    # The run's fence token: START claims the job (if this message's generation is current) and every later
    # write of this run carries it, so a run that lost the job writes nothing. One round trip: the checks,
    # the delivery counted, the claim and the record (jobs/start.lua).
    token = uuid.uuid4().hex
    claim = {"status": Status.PROCESSING.value, "attempts": attempt,
             "message": f"Started (attempt {attempt})" if attempt > 1 else "Started",
             "error_type": "", "error_message": "", "worker": task.request.hostname or "",
             "stage": ""}  # an attempt starts outside any stage (JobContext.progress names them)
    started = retry_redis(lambda: store.start(job_id, generation, token, res.settings.max_worker_losses,
                                              time.time(), claim))
    claimed_at = time.monotonic()
    job = started.job
    if started.code == 0:
        log.warning("job %s is unknown or expired; message dropped", job_id)
        return
    if started.code == -1:
        log.info("job %s already ended; duplicate delivery dropped", job_id)
        return
    if started.code == -2 or job is None:
        log.info("job %s: a stale copy of its message (generation %d; it was queued again since); dropped",
                 job_id, generation)
        return
    if started.code == -3:  # (a parent's callback run comes here after its children were cancelled)
        finish(job, Status.REVOKED, "Cancelled before it started" if job.started_at is None else "Cancelled")
        return
    if started.code == -4:
        losses = started.deliveries - job.finished_deliveries - 1
        finish(job, Status.FAILURE, "Task failed", error_type="WorkerLost",
               error_message=f"the worker running this job died {losses} times (killed, out of memory "
                             f"or crashed); not trying again")
        return
    # From here on the delivery is counted: whatever happens, even a Redis error that requeues the
    # message, it is counted as finished, so a requeued run is not taken for a lost worker.
    delivery = Delivery(job_id, counted=True)
    fence = f"run:{token}"
    with job_log_context(task_type=job.type, tenant=job.tenant), error_reports.job_scope(job.id, job.type, job.tenant):
        try:
            jt = load_all().get(job.type)
            if jt is None:
                finish(job, Status.FAILURE, "Task failed", fence, delivery, error_type="UnknownTaskType",
                       error_message=f"this worker does not know job type {job.type!r}")
                return
            with run_span(job, attempt, started.deliveries):
                _run(task, jt, job, attempt, delivery, fence, claimed_at)
        finally:
            delivery.close()


def _run(task: Task, jt: JobType, job: Job, attempt: int, delivery: Delivery, fence: str,
         claimed_at: float) -> None:
    res = resources()
    ctx = JobContext(job, res.store, res.artifacts, attempt=attempt, delivery=job.deliveries, fence=fence,
                     last_write=claimed_at)

    def end(status: Status, message: str, **fields: Any) -> None:
        finish(job, status, message, fence, delivery, **ctx.end_progress(), **fields)

    try:
        data = jt.input_model.model_validate(job.input)
        result = jt.func(data, ctx)
    except JobFenced:  # the recovery took the job back (this worker was silent too long): stop, write nothing
        log.warning("job %s: this run lost the job to a newer one; stopped without writing", job.id)
    except JobCancelled:
        end(Status.REVOKED, "Cancelled while running", progress=ctx.percent)
    except SoftTimeLimitExceeded:
        end(Status.FAILURE, "Task failed", error_type="TimeLimitExceeded",
            error_message=f"soft time limit of {job.soft_time_limit_s:g}s exceeded; the job was stopped")
    except TransientJobError as exc:
        if attempt <= job.max_retries:
            countdown = backoff_s(jt, attempt)
            if res.settings.amqp_broker:
                # RabbitMQ's delayed delivery (Celery's, on quorum queues) counts whole seconds and refuses
                # a countdown that rounds down to 0 (the message would be dropped): at least 1 s.
                countdown = float(max(1, math.ceil(countdown)))
            written, _ = res.store.run_update(job.id, {
                "status": Status.RETRY.value,
                "message": f"Attempt {attempt} failed; retrying in {countdown:.1f}s",
                **ctx.end_progress(), **error_fields(exc),
            }, fence, end_delivery=True, lend_slot=True)
            delivery.open = False
            if written == -2:  # this run lost the job: the newer run decides, no retry from here
                return
            retry_through_broker(task, countdown, exc, job.queue, res.settings.amqp_broker)
        end(Status.FAILURE, "Task failed", error_type=type(exc).__name__,
            error_message=f"failed after {attempt} attempts: {exc}")
    except ValidationError as exc:
        end(Status.FAILURE, "Task failed", error_type="InvalidInput", error_message=str(exc))
    except JobError as exc:
        end(Status.FAILURE, "Task failed", **error_fields(exc))
    except REDIS_DOWN:  # the job's own record access (fan-out, children) met an outage: run it again
        raise
    except Exception as exc:  # a bug or an unexpected fault in the job: recorded, never retried blindly
        log.exception("job %s raised", job.id)
        end(Status.FAILURE, "Task failed", **error_fields(exc))
    else:
        if isinstance(result, Deferred):  # waiting for child jobs: the last one's end queues the next run
            log.info("job %s waits for %d child jobs", job.id, result.children)
            return
        end(Status.SUCCESS, "Task completed successfully",
            result=result, artifacts=[a.to_dict() for a in ctx.artifacts])
    finally:
        ctx.close()  # the scratch copies of S3 inputs (JobContext.input_path); no progress write after this


def retry_through_broker(task: Task, countdown: float, exc: Exception, queue: str, amqp: bool) -> NoReturn:
    """Celery's retry: the next attempt's message published with its countdown, this one acknowledged.
    If that publish fails, Celery rejects this message without requeueing it (dropped). With Redis as the
    broker the orphan sweep finds the job again; RabbitMQ's queues are not swept (worker/sweep.py), so
    there this message goes back to its queue instead and the attempt runs again: late, never lost."""
    try:
        raise task.retry(countdown=countdown, exc=exc, queue=queue) from None
    except Reject as rejected:
        if not amqp:
            raise
        log.warning("the retry of %s could not be published (%s); its message goes back to the queue",
                    task.request.id, rejected.reason)
        raise Reject(rejected.reason, requeue=True) from None


@signals.worker_process_init.connect
def _observe_this_process(**_: Any) -> None:
    """Each pool process exports its own spans and error reports (after the fork: no sender thread crosses it)."""
    tracing.setup("worker")
    error_reports.setup("worker", get_settings().environment)
