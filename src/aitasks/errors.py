"""One exception tree. API errors map to HTTP in one handler (api/errors.py); job errors to job records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class AitasksError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigurationError(AitasksError):
    """Raised when settings are missing or unsafe (a missing Redis URL, a model folder not set)."""


# --- errors answered to API clients -------------------------------------------------------------


@dataclass
class FieldError:
    field: str
    message: str


class ApiError(AitasksError):
    """Raised by API code to answer a client with ``status`` and the shared error body."""

    status: int = 400
    code: str = "error"

    def __init__(self, message: str, fields: list[FieldError] | None = None, headers: dict[str, str] | None = None,
                 extra: dict[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.fields = fields or []
        self.headers = headers or {}
        self.extra = extra or {}  # more keys for the body, beside error/code/fields (e.g. the seeds' task_id)


class ValidationFailed(ApiError):
    """Raised when a request names an unknown job type, misses a field or carries a bad value or file."""

    status = 400
    code = "validation_error"


class PayloadTooLarge(ApiError):
    """Raised when a request body or an uploaded file is over the size limit."""

    status = 413
    code = "payload_too_large"


class Unauthorized(ApiError):
    """Raised when a request has no API key or a key that does not exist or was revoked."""

    status = 401
    code = "unauthorized"

    def __init__(self, message: str = "A valid API key is required (Authorization: Bearer <key>)."):
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    """Raised when a valid key may not do what it asked (a job type the deployment keeps for admins)."""

    status = 403
    code = "forbidden"


class NotFound(ApiError):
    """Raised for an unknown or expired job id, or one that belongs to another tenant."""

    status = 404
    code = "not_found"


class Conflict(ApiError):
    """Raised when an action does not fit the job's state (cancelling a finished job)."""

    status = 400
    code = "invalid_state"


class TooManyRequests(ApiError):
    """Raised when a submit passes one of its tenant's limits (``submits_per_s``, ``max_queued``): the body's
    ``limit`` and ``fields`` name it (api/flow_control.py)."""

    status = 429
    code = "rate_limited"


class InsufficientStorage(ApiError):
    """Raised when a submit's tenant already stores its ``max_storage_mb`` (jobs/storage_quota.py): its job
    could store no output; the body's ``limit`` and ``fields`` name it."""

    status = 507
    code = "storage_full"


class ServiceUnavailable(ApiError):
    """Raised when Redis cannot be reached or a job type is not configured on this deployment."""

    status = 503
    code = "unavailable"


# --- errors raised inside jobs -------------------------------------------------------------------


class JobError(AitasksError):
    """Raised by a job function for a permanent failure: the job ends FAILURE and is not retried."""


class TransientJobError(JobError):
    """Raised by a job function for a failure worth retrying (a busy resource, a flaky device)."""


class JobCancelled(AitasksError):
    """Raised inside a job by ``ctx.check_cancel()`` once a client asked to cancel it."""


# Field paths and sentences for validation errors: shared by the API and the submit-time checks of job
# types that validate nested inputs (comparison, visualization), so both name fields the same way.
def field_path(loc: tuple[Any, ...]) -> str:
    if loc and loc[0] in ("body", "query", "path", "header"):  # where it came from, not a field (a field may
        loc = loc[1:]                                            # be named `query`: POST /api/v1/search)
    parts = [str(p) for p in loc]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def pydantic_fields(errors: list[Any], prefix: str = "") -> list[FieldError]:
    fields = []
    for e in errors:
        path = field_path(tuple(e.get("loc", ())))
        if prefix:
            path = f"{prefix}.{path}" if path != "body" else prefix
        msg = e.get("msg", "invalid")
        if e.get("type") == "missing":
            msg = "is required"
        elif e.get("type") == "extra_forbidden":
            msg = "is not a known field"
        fields.append(FieldError(path, msg))
    return fields


def summary(fields: list[FieldError]) -> str:
    first = fields[0]
    text = f"{first.field} {first.message}" if first.message.startswith("is ") else f"{first.field}: {first.message}"
    return text + (f" (and {len(fields) - 1} more)" if len(fields) > 1 else "")
