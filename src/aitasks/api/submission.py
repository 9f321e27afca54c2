"""Turning a submit request into an accepted job: parse, validate, store input files, enqueue.

One path for every submit endpoint: the JSON body of the seeds (files as base64 fields) and
multipart uploads (files as parts, ``parameters`` as a JSON string) both end in the job type's own
input model, so they give the same answers and the same errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from aitasks.errors import pydantic_fields, summary
from aitasks.api.services import Services
from aitasks.errors import FieldError, ServiceUnavailable, ValidationFailed
from aitasks.jobs.files import CheckedFile, check_file, decode_base64
from aitasks.jobs.models import Job
from aitasks.processors.registry import JobType
from aitasks.worker.message import job_message

MAX_IDEMPOTENCY_KEY = 255


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


async def read_payload(request: Request) -> tuple[dict[str, Any], dict[str, UploadFile]]:
    """The request's fields and uploaded files, from JSON or multipart."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=20, max_fields=200)
        except HTTPException as exc:  # malformed multipart: answer in the shared error shape
            if exc.status_code != 400:
                raise
            raise ValidationFailed(f"request body is not valid {content_type} ({exc.detail})",
                                   [FieldError("body", f"is not valid {content_type}")]) from None
        fields: dict[str, Any] = {}
        uploads: dict[str, UploadFile] = {}
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                uploads[name] = value
            elif name == "parameters":
                try:
                    fields[name] = orjson.loads(value) if value.strip() else {}
                except orjson.JSONDecodeError:
                    raise ValidationFailed("parameters is not valid JSON",
                                           [FieldError("parameters", "must be a JSON object")]) from None
            else:
                fields[name] = value
        return fields, uploads
    body = await request.body()
    if not body:
        raise ValidationFailed("request body is empty; send a JSON object with task_type",
                               [FieldError("body", "is empty")])
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(f"request body is not valid JSON ({exc.msg})",
                               [FieldError("body", "is not valid JSON")]) from None
    if not isinstance(payload, dict):
        raise ValidationFailed("request body must be a JSON object", [FieldError("body", "must be an object")])
    return payload, {}


def resolve_type(services: Services, task_type: Any) -> JobType:
    if task_type in (None, ""):
        raise ValidationFailed("task_type is required", [FieldError("task_type", "is required")])
    jt = services.registry.get(task_type) if isinstance(task_type, str) else None
    if jt is None:
        valid = ", ".join(services.registry.names())
        raise ValidationFailed(f"Unknown task_type: {task_type!r}. Valid types: {valid}",
                               [FieldError("task_type", f"must be one of: {valid}")])
    return jt


async def build_submission(
    services: Services, jt: JobType, fields: dict[str, Any], uploads: dict[str, UploadFile], job_id: str,
) -> Submission:
    """Validate the input against the type's model; decode and check its files (nothing stored yet)."""
    settings = services.settings
    if jt.submit_path:
        raise ValidationFailed(f"{jt.name} is submitted through {jt.submit_path}, not this path",
                               [FieldError("task_type", f"submit {jt.name} through {jt.submit_path}")])
    reason = jt.unavailable_reason(settings)
    if reason:
        raise ServiceUnavailable(f"{jt.name} is not available in this deployment: {reason}")
    raw = {k: v for k, v in fields.items() if v is not None}
    unknown_uploads = set(uploads) - set(jt.files)
    if unknown_uploads:
        name = sorted(unknown_uploads)[0]
        raise ValidationFailed(f"{name} is not a file input of {jt.name}",
                               [FieldError(name, f"{jt.name} takes files in: {', '.join(jt.files) or 'none'}")])
    files: dict[str, tuple[str, CheckedFile]] = {}
    for name, kind in jt.files.items():
        filename: str | None = None
        if name in uploads:
            upload = uploads[name]
            data = await upload.read()
            filename = upload.filename
        elif name in raw:
            data = decode_base64(name, raw[name])
        else:
            continue
        checked = await asyncio.to_thread(check_file, name, kind, data, settings.max_upload_bytes,
                                          settings.max_image_pixels)
        artifact = f"input-{name}.{checked.extension}"
        files[name] = (artifact, checked)
        raw[name] = {"artifact": artifact, "media_type": checked.media_type, "bytes": len(data),
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
    services: Services, tenant: str, sub: Submission, job_id: str, idempotency_key: str | None,
    webhook: tuple[str | None, tuple[str, ...]] = (None, ()), document: str | None = None,
    webhook_format: tuple[str, str] | None = None,
) -> Accepted:
    """Store input files, then record and enqueue the job in one atomic Redis call.

    ``webhook_format``: (format, base URL) when the webhook is sent another shape (see Job.webhook_format)."""
    settings = services.settings
    jt = sub.job_type
    if jt.check_access is not None:
        await jt.check_access(sub.data, tenant, services.store)
    limits = jt.limits(settings)
    try:
        queue = jt.queue_for(sub.data)
    except ValueError as exc:
        raise ServiceUnavailable(str(exc)) from None
    job = Job(
        id=job_id, type=jt.name, tenant=tenant, queue=queue, created_at=time.time(), input=sub.input,
        retention_s=limits["retention_s"], soft_time_limit_s=limits["soft_time_limit_s"],
        time_limit_s=limits["time_limit_s"], max_retries=limits["max_retries"],
        webhook=webhook[0], webhook_events=webhook[1], document=document,
        webhook_format=webhook_format[0] if webhook_format and webhook[0] else None,
        webhook_base=webhook_format[1] if webhook_format and webhook[0] else None,
    )
    if sub.files:
        await asyncio.to_thread(_save_inputs, services, job_id, sub.files)
    message = job_message(job_id, queue, limits["soft_time_limit_s"], limits["time_limit_s"])
    idem = hashlib.sha256(idempotency_key.encode()).hexdigest() if idempotency_key else None
    try:
        created, stored_id = await services.store.create(
            job, message, settings.pending_ttl_s, idem, limits["retention_s"])
    except BaseException:
        if sub.files:
            services.artifacts.delete_job(job_id)
        raise
    if not created:
        if sub.files:
            services.artifacts.delete_job(job_id)
        first = await services.store.get(stored_id)
        if first is not None:
            return Accepted(first, created=False)
    return Accepted(job, created=True)


def _save_inputs(services: Services, job_id: str, files: dict[str, tuple[str, CheckedFile]]) -> None:
    for artifact, checked in files.values():
        services.artifacts.save(job_id, artifact, checked.data, checked.media_type)


def check_idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not value or len(value) > MAX_IDEMPOTENCY_KEY:
        raise ValidationFailed(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters",
                               [FieldError("Idempotency-Key", f"must be 1-{MAX_IDEMPOTENCY_KEY} characters")])
    return value


def new_job_id() -> str:
    return str(uuid.uuid4())
