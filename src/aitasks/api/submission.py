"""The submit service: one function, ``submit``, turns a job type and its fields into an accepted job.

Every entry point ends here: the seeds' JSON and multipart submits, seed 003's paths, Replicate's
``/v1/predictions`` and document uploads. They differ only in how they read the request (see
api/submit_request.py and the route modules); validation, input files, the webhook, the atomic record +
enqueue and the idempotency key are done once, here, so every path gives the same answers and errors.
Nothing here knows about HTTP requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.datastructures import UploadFile

from aitasks import tracing
from aitasks.api import flow_control
from aitasks.api.deps import live_or_recorded
from aitasks.api.outbox_forwarder import OutboxForwarder, unreachable
from aitasks.api.services import Services
from aitasks.api.webhook_input import read_webhook
from aitasks.errors import FieldError, Forbidden, ServiceUnavailable, ValidationFailed, pydantic_fields, summary
from aitasks.jobs.keys import PRIORITIES
from aitasks.jobs.files import CheckedFile, check_file, decode_base64
from aitasks.jobs.messages import job_message
from aitasks.jobs.pipelined import OutcomeUnknown
from aitasks.jobs.storage_quota import StorageFull
from aitasks.jobs.store import QueueFull
from aitasks.jobs.models import Job
from aitasks.processors.registry import JobType


@dataclass(frozen=True)
class PreparedFile:
    """A file its entry point has already checked (a document upload): stored as it is."""

    data: bytes
    media_type: str
    extension: str
    filename: str | None = None


@dataclass(frozen=True)
class SubmitOptions:
    idempotency_key: str | None = None
    # The API's base URL at submit: webhook bodies carry absolute links (artifacts, Replicate's urls).
    base_url: str | None = None
    webhook_format: str | None = None  # "replicate": the webhook is sent Replicate's prediction object
    job_id: str | None = None  # given by an entry point that needs the id before the job exists
    document: str | None = None  # the document record the job marks when it ends (documents/records.py)
    internal: bool = False  # the entry point named by the type's ``submit_path`` (documents)
    admin: bool = False  # the caller's key has the admin scope: it may submit restricted types
    counted: bool = False  # its entry point already took it from the tenant's limits (a document batch)


@dataclass
class Submission:
    job_type: JobType
    data: BaseModel
    files: dict[str, tuple[str, CheckedFile]]  # field -> (artifact name, checked bytes)
    input: dict[str, Any]


@dataclass
class Accepted:
    job: Job
    created: bool  # False when an Idempotency-Key returned an earlier job


Uploads = Mapping[str, "UploadFile | PreparedFile"]


async def submit(services: Services, tenant: str, task_type: Any, fields: dict[str, Any], uploads: Uploads,
                 options: SubmitOptions = SubmitOptions()) -> Accepted:
    """Validate, store the input files, record and enqueue the job in one atomic step.

    ``fields``: the submit's fields (files as base64 strings, or as ``uploads``; ``webhook`` and
    ``webhook_events_filter`` are taken out here). Raises ApiError subclasses with the field named."""
    if not options.counted:  # the tenant's submit limits (429), before any work on the request
        await flow_control.take(services, tenant)
    jt = resolve_type(services, task_type)
    if jt.submit_path and not options.internal:
        raise ValidationFailed(f"{jt.name} is submitted through {jt.submit_path}, not this path",
                               [FieldError("task_type", f"submit {jt.name} through {jt.submit_path}")])
    refusal = None if options.admin else jt.restricted_reason(services.settings)
    if refusal:  # the caller, not the deployment: 403 (an admin key passes)
        raise Forbidden(f"{jt.name} is not allowed: {refusal}", [FieldError("task_type", refusal)])
    fields = dict(fields)
    webhook = await read_webhook(fields, services.settings)
    priority = read_priority(fields)
    sub = await build_submission(services, jt, fields, uploads)
    return await accept(services, tenant, sub, options.job_id or new_job_id(), options, webhook, priority)


def read_priority(fields: dict[str, Any]) -> str:
    """The submit's ``priority`` (taken out of ``fields``): high, normal (the default) or low."""
    value = fields.pop("priority", None)
    if value in (None, ""):
        return "normal"
    if value not in PRIORITIES:
        raise ValidationFailed(f"priority must be one of {', '.join(PRIORITIES)}, not {value!r}",
                               [FieldError("priority", f"must be one of: {', '.join(PRIORITIES)}")])
    return str(value)


def resolve_type(services: Services, task_type: Any) -> JobType:
    if task_type in (None, ""):
        raise ValidationFailed("task_type is required", [FieldError("task_type", "is required")])
    jt = services.registry.get(task_type) if isinstance(task_type, str) else None
    if jt is None:
        valid = ", ".join(services.registry.names())
        raise ValidationFailed(f"Unknown task_type: {task_type!r}. Valid types: {valid}",
                               [FieldError("task_type", f"must be one of: {valid}")])
    return jt


async def _checked(services: Services, name: str, jt: JobType, upload: UploadFile | PreparedFile | None,
                   raw: dict[str, Any]) -> tuple[CheckedFile, str | None] | None:
    """A file input's checked bytes and file name: from an upload, a prepared file or a base64 field."""
    settings = services.settings
    if isinstance(upload, PreparedFile):
        return CheckedFile(upload.data, upload.media_type, upload.extension), upload.filename
    if upload is not None:
        data, filename = await upload.read(), upload.filename
    elif name in raw:
        data, filename = decode_base64(name, raw[name]), None
    else:
        return None
    checked = await asyncio.to_thread(check_file, name, jt.files[name], data, settings.max_upload_bytes,
                                      settings.max_image_pixels)
    return checked, filename


async def build_submission(services: Services, jt: JobType, fields: dict[str, Any], uploads: Uploads) -> Submission:
    """Validate the input against the type's model; decode and check its files (nothing stored yet)."""
    # Not configured here (503); a restricted type was refused (403) or let pass (admin) by ``submit``.
    reason = jt.unavailable(services.settings) if jt.unavailable else None
    if reason:
        raise ServiceUnavailable(f"{jt.name} is not available in this deployment: {reason}")
    raw = {k: v for k, v in fields.items() if v is not None}
    unknown_uploads = set(uploads) - set(jt.files)
    if unknown_uploads:
        name = sorted(unknown_uploads)[0]
        raise ValidationFailed(f"{name} is not a file input of {jt.name}",
                               [FieldError(name, f"{jt.name} takes files in: {', '.join(jt.files) or 'none'}")])
    files: dict[str, tuple[str, CheckedFile]] = {}
    for name in jt.files:
        found = await _checked(services, name, jt, uploads.get(name), raw)
        if found is None:
            continue
        checked, filename = found
        artifact = f"input-{name}.{checked.extension}"
        files[name] = (artifact, checked)
        raw[name] = {"artifact": artifact, "media_type": checked.media_type, "bytes": len(checked.data),
                     "filename": filename, "width": checked.width, "height": checked.height}
    try:
        data_model = jt.input_model.model_validate(raw)
    except ValidationError as exc:
        flds = pydantic_fields(list(exc.errors()))
        raise ValidationFailed(summary(flds), flds) from None
    if jt.check_files is not None:
        check = jt.check_files
        await asyncio.to_thread(check, data_model, {name: c.data for name, (_, c) in files.items()})
    return Submission(jt, data_model, files, data_model.model_dump(mode="json", exclude_none=True))


async def accept(
    services: Services, tenant: str, sub: Submission, job_id: str, options: SubmitOptions,
    webhook: tuple[str | None, tuple[str, ...]] = (None, ()), priority: str = "normal",
) -> Accepted:
    """Store input files, then record and enqueue the job in one atomic Redis call; traced as the job's
    ``aitasks.submit`` span, the root of its trace (tracing/)."""
    attributes = {"aitasks.job_id": job_id, "aitasks.task_type": sub.job_type.name, "aitasks.tenant": tenant}
    with tracing.tracer.start_as_current_span("aitasks.submit", attributes=attributes):
        return await _accept(services, tenant, sub, job_id, options, webhook, priority)


async def _accept(
    services: Services, tenant: str, sub: Submission, job_id: str, options: SubmitOptions,
    webhook: tuple[str | None, tuple[str, ...]], priority: str,
) -> Accepted:
    settings = services.settings
    jt = sub.job_type
    if jt.check_access is not None:
        await jt.check_access(sub.data, tenant, services.store)
    limits = jt.limits(settings)
    try:
        queue = jt.queue_for(sub.data)
    except ValueError as exc:
        raise ServiceUnavailable(str(exc)) from None
    hooked = webhook[0] is not None
    job = Job(
        id=job_id, type=jt.name, tenant=tenant, queue=queue, created_at=time.time(), input=sub.input,
        retention_s=limits["retention_s"], soft_time_limit_s=limits["soft_time_limit_s"],
        time_limit_s=limits["time_limit_s"], max_retries=limits["max_retries"],
        webhook=webhook[0], webhook_events=webhook[1], document=options.document,
        webhook_format=options.webhook_format if hooked else None,
        webhook_base=options.base_url if hooked else None, traceparent=tracing.current_traceparent(),
        priority=priority,
    )
    if sub.files:
        try:
            await asyncio.to_thread(_save_inputs, services, tenant, job_id, sub.files)
        except StorageFull as exc:  # over max_storage_mb: 413, and what was stored of it goes
            await asyncio.to_thread(services.artifacts.delete_job, job_id)
            raise exc.api_error() from None
    message = job_message(job_id, queue, limits["soft_time_limit_s"], limits["time_limit_s"])
    key = options.idempotency_key
    idem = hashlib.sha256(key.encode()).hexdigest() if key else None
    outbox = services.outbox
    if outbox is not None and (outbox.down or outbox.holding):
        first_job = await outbox.find_key(tenant, idem) if idem else None
        if first_job is not None:  # the key's first submit waits in the outbox: that is the job
            if sub.files:
                services.artifacts.delete_job(job_id)
            return Accepted(first_job, created=False)
        if outbox.down:  # Redis was unreachable a moment ago: no waiting on it, the forwarder probes it
            try:
                return await _outboxed(services, outbox, job, message, idem, limits["retention_s"], bool(sub.files))
            except ServiceUnavailable:  # full: nothing accepted
                if sub.files:
                    services.artifacts.delete_job(job_id)
                raise
    claim = False  # True on the second pass: the key's first job is in no store any more
    while True:
        try:
            created, stored_id = await services.store.create(
                job, message, settings.pending_ttl_s, idem, limits["retention_s"], claim=claim,
                max_queued=settings.default_max_queued)
        except QueueFull as exc:  # another submit took the tenant's last queued slot since its check
            if sub.files:
                services.artifacts.delete_job(job_id)
            raise flow_control.queue_full(exc.max_queued) from None
        except BaseException as exc:
            applied = maybe_applied(exc, services.store.pipe is not None)
            if outbox is not None and isinstance(exc, Exception) and unreachable(exc):
                # Refused, timed out, or sent without an answer: the outbox forwards it by this id, and CREATE
                # says "already exists" if it did run, so it is accepted once either way.
                outbox.mark_down(exc)
                try:
                    return await _outboxed(services, outbox, job, message, idem, limits["retention_s"], bool(sub.files))
                except ServiceUnavailable:  # full: as without an outbox
                    if applied:
                        raise outcome_unknown(job_id, key is not None) from exc
                    if sub.files:
                        services.artifacts.delete_job(job_id)
                    raise
            if not applied:  # never reached Redis: nothing accepted
                if sub.files:
                    services.artifacts.delete_job(job_id)
                raise
            # Sent, no answer: Redis may have recorded and queued the job, so its inputs stay (if it did not,
            # the workers' sweep removes the folder of a job without a record).
            if isinstance(exc, Exception):
                raise outcome_unknown(job_id, key is not None) from exc
            raise  # cancelled: the client went away
        if created or stored_id == job_id:  # the same id: a resent create that had already run
            return Accepted(job, created=True)
        # A repeated Idempotency-Key: its first job, live in Redis or ended in the store of record.
        first = await live_or_recorded(services, tenant, stored_id)  # SQL once Redis let it go
        if first is not None:
            if sub.files:
                services.artifacts.delete_job(job_id)
            return Accepted(first, created=False)
        if claim:  # expired again between the two passes
            if sub.files:
                services.artifacts.delete_job(job_id)
            raise ServiceUnavailable("The job of this Idempotency-Key has just expired; send the request again.",
                                     headers={"Retry-After": "1"})
        claim = True  # gone from both stores (expired): this submit takes the key over


async def _outboxed(services: Services, outbox: OutboxForwarder, job: Job, message: str, idem: str | None,
                    idem_ttl_s: int, files: bool) -> Accepted:
    """Accept into the outbox: answered as any accepted submit (202, PENDING). Raises ServiceUnavailable when full."""
    await outbox.take(job, message, services.settings.pending_ttl_s, idem, idem_ttl_s, files)
    return Accepted(job, created=True)


def maybe_applied(exc: BaseException, pipelined: bool) -> bool:
    """Whether the create may have run although no answer came: it was sent, then the reply was lost."""
    if isinstance(exc, OutcomeUnknown | asyncio.CancelledError):
        return True
    if pipelined:  # jobs/pipelined.py marks every command that left with OutcomeUnknown
        return False
    # redis-py (TLS URLs): a failed connect names itself so; any other socket error came after sending.
    return isinstance(exc, RedisConnectionError | RedisTimeoutError) and "connecting to" not in str(exc)


def outcome_unknown(job_id: str, keyed: bool) -> ServiceUnavailable:
    how = ("Send the same request with the same Idempotency-Key: it returns this job if it was accepted, "
           "or accepts it now." if keyed else
           f"Poll GET /api/v1/tasks/{job_id}/status/: 404 once Redis answers means it was not accepted. "
           "Send an Idempotency-Key to make a resend safe.")
    return ServiceUnavailable(f"The job store (Redis) did not answer in time; job {job_id} may have been "
                              f"accepted. {how}", headers={"Retry-After": "2"}, extra={"task_id": job_id})


def _save_inputs(services: Services, tenant: str, job_id: str, files: dict[str, tuple[str, CheckedFile]]) -> None:
    for artifact, checked in files.values():
        services.artifacts.save(job_id, artifact, checked.data, checked.media_type, tenant=tenant)


def new_job_id() -> str:
    return str(uuid.uuid4())
