"""Response shapes, for the OpenAPI document. Routes return JSON directly (for speed), so nothing checks
them at run time: the tests do, validating every answer they get against its documented schema."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from aitasks.jobs.models import Status


class FieldErrorBody(BaseModel):
    field: str = Field(examples=["task_type"])
    message: str = Field(examples=["is required"])


class ErrorBody(BaseModel):
    error: str = Field(description="The human sentence.", examples=["task_type is required"])
    code: str = Field(examples=["validation_error"])
    fields: list[FieldErrorBody] | None = None


class UnavailableBody(ErrorBody):
    """503: with ``task_id`` when Redis got the job but its answer was lost (the job may exist)."""

    task_id: str | None = Field(None, description="Set when the job may have been accepted: poll it, or resend "
                                                   "with the same Idempotency-Key.")


class InvalidState(ErrorBody):
    """Cancelling a task that already finished (seed 001 answered these keys)."""

    message: str = Field(examples=["Task already completed (SUCCESS), cannot cancel"])
    task_id: str
    status: Status


class SubmitResponse(BaseModel):
    task_id: str = Field(examples=["5b0d6a1e-3f7c-4a53-9a59-2d0f9f3b1f10"])
    status: Status = Field(examples=["PENDING"])
    message: str = Field(examples=["Task submitted successfully"])
    task_type: str = Field(examples=["diagnostic"])
    queue: str = Field(examples=["cpu"])
    status_url: str
    result_url: str
    events_url: str


class StatusResponse(BaseModel):
    task_id: str
    status: Status = Field(examples=["PROCESSING"])
    progress: int = Field(ge=0, le=100, examples=[50])
    message: str = Field(examples=["step 2/4"])
    result_available: bool
    error: str | None = Field(None, description="Present when the job failed (or its last attempt did).")
    error_type: str | None = None
    task_type: str
    queue: str
    priority: Literal["high", "normal", "low"] = Field(
        "normal", description="Its order within its tenant's share of the workers: high before normal before low.")
    queue_position: int | None = Field(
        None, ge=1, description="While it waits for a worker slot (status endpoint only): its place in its "
                                "tenant's line on its queue, 1 = the tenant's next job to start.")
    attempts: int
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    cancel_requested: bool | None = None
    worker: str | None = Field(None, description="The Celery node that last started it.")
    parent: str | None = Field(None, description="A child job's parent (e.g. a comparison).")
    children: list[str] | None = Field(None, description="A parent job's children, in order.")
    webhook: WebhookInfo | None = Field(None, description="Present when the job was submitted with a webhook "
                                                          "(status endpoint only).")


class WebhookInfo(BaseModel):
    url: str
    events: list[str] = Field(examples=[["completed"]])
    deliveries: list[dict[str, Any]] = Field(description="Each attempt: event, seq, attempt, outcome, status code.")


class FinishedResponse(StatusResponse):
    """A submit that waited (`Prefer: wait`, `?async_processing=false`) and saw its job end."""

    status_url: str
    result_url: str
    events_url: str
    result: dict[str, Any] | None = Field(None, description="On success: as `result` of the `/result/` answer.")


class ResultResponse(BaseModel):
    task_id: str
    status: Status = Field(examples=["SUCCESS"])
    result: dict[str, Any] | None = Field(
        None, description="The job type's output, with `artifacts` (download links) and, for image results, "
                          "`image_data` (base64, as seed 001 returns it).")
    error: str | None = None
    error_type: str | None = None
    attempts: int | None = Field(None, description="A failed task's attempts.")
    progress: int | None = None
    message: str | None = None


class CancelResponse(BaseModel):
    task_id: str
    message: str = Field(examples=["Task cancelled successfully"])
    status: Status


class TaskList(BaseModel):
    tasks: list[StatusResponse]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null at the end.")


class TaskTypeInfo(BaseModel):
    name: str
    description: str
    queue: str
    input_schema: dict[str, Any]
    file_inputs: list[str]
    limits: dict[str, Any]
    retry: dict[str, Any]
    examples: list[dict[str, Any]]
    available: bool
    unavailable_reason: str | None = None
    options: dict[str, Any] | None = None
    submit_path: str | None = Field(None, description="Set when the type is submitted only through this path.")


class RateLimitedBody(ErrorBody):
    """429: a submit over one of its tenant's limits; ``limit`` and ``fields`` name it."""

    limit: str = Field(description="The limit passed: `submits_per_s` (the token bucket), `max_queued`, or "
                                   "`max_streams` (open streams and waiting submits; the body adds `max_streams` "
                                   "and `streams`, the count open).", examples=["submits_per_s"])
    retry_after_s: float | None = Field(None, description="Seconds until a submit may pass (as `Retry-After`, "
                                                          "unrounded); null when waiting cannot help (a batch "
                                                          "larger than the burst).")
    max_streams: int | None = Field(None, description="`max_streams` refusals: the tenant's limit.")
    streams: int | None = Field(None, description="`max_streams` refusals: its streams open now.")


class StorageFullBody(ErrorBody):
    """413/507 over the tenant's ``max_storage_mb`` (jobs/storage_quota.py); a plain 413 (a body or file over the
    size limit) has only the error's fields."""

    limit: str | None = Field(None, description="`max_storage_mb` when the tenant's storage refused it.")
    max_storage_mb: int | None = Field(None, description="The tenant's limit, in MB.")
    storage_used_bytes: int | None = Field(None, description="Bytes the tenant stores now.")
    refused_bytes: int | None = Field(None, description="413: the bytes that would have gone over it.")


# On a refusal over `submits_per_s`, and on every accepted submit of a tenant with a submit rate.
SUCCESS_RATE_HEADERS: dict[str, Any] = {
    "RateLimit-Limit": {"description": "The tenant's burst (the bucket's size).", "schema": {"type": "integer"}},
    "RateLimit-Remaining": {"description": "Whole submits left in the bucket.", "schema": {"type": "integer"}},
    "RateLimit-Reset": {"description": "Seconds until the bucket is full again.", "schema": {"type": "integer"}},
    "RateLimit-Policy": {"description": "`<burst>;w=<seconds to refill it>`.", "schema": {"type": "string"}},
}
RATE_LIMIT_HEADERS: dict[str, Any] = {
    "Retry-After": {"description": "Whole seconds to wait before submitting again.", "schema": {"type": "integer"}},
    **SUCCESS_RATE_HEADERS,
}


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Invalid input: the body names the field and the reason."},
    401: {"model": ErrorBody, "description": "No API key, or an unknown, revoked or expired one."},
    403: {"model": ErrorBody, "description": "The key may not do this here: a `read` key writing (the body "
                                               "names its scope), or a job type the deployment keeps off "
                                               "(`diagnostic`: the body names the setting)."},
    404: {"model": ErrorBody, "description": "Unknown, expired, or another tenant's task."},
    413: {"model": StorageFullBody, "description": "Body or file over the size limit, or over the tenant's "
                                               "`max_storage_mb` (`limit`, `max_storage_mb`, `storage_used_bytes` "
                                               "name it): nothing was stored."},
    429: {"model": RateLimitedBody, "headers": RATE_LIMIT_HEADERS,
          "description": "Over the tenant's submit rate (`submits_per_s`/`burst`) or its `max_queued` jobs waiting "
                         "to start (`aitasks tenants set`; GET /api/v1/limits shows them): nothing was accepted."},
    507: {"model": StorageFullBody, "description": "The tenant already stores its `max_storage_mb` (`limit`, "
                                               "`max_storage_mb`, `storage_used_bytes` name it): nothing was accepted."},
    503: {"model": UnavailableBody, "description": "Redis unreachable, or the job type is not configured "
          "here (the body names the missing setting): nothing was accepted. With `task_id`: Redis got the job "
          "but its answer was lost, so it may have been accepted (see Retry-After and the message)."},
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: ERRORS[c] for c in codes}
