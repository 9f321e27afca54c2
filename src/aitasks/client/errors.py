"""What the client raises: one class per thing a caller handles differently."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx


class ClientError(Exception):
    """Base of everything aitasks.Client raises on purpose."""


@dataclass
class FieldProblem:
    field: str
    message: str


class ApiError(ClientError):
    """The service answered with an error (its JSON error body, parsed)."""

    def __init__(self, status: int, message: str, code: str = "error", fields: list[FieldProblem] | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.message = message
        self.code = code
        self.fields = fields or []


class ValidationError(ApiError):
    """400/413: the service refused the input; ``fields`` names each field and why."""


class Unauthorized(ApiError):
    """401: no API key, or an unknown or revoked one."""


class NotFound(ApiError):
    """404: unknown, expired, or another tenant's job (the service does not say which)."""


class ServiceUnavailable(ApiError):
    """503: Redis is down or the job type is not configured on this deployment."""


class RateLimited(ApiError):
    """429: a submit over the tenant's limits; ``limit`` names it (``submits_per_s``, ``max_queued`` or
    ``max_streams``),
    ``retry_after_s`` says when to try again (None: waiting cannot help, e.g. a batch larger than the burst)."""

    def __init__(self, status: int, message: str, code: str = "error", fields: list[FieldProblem] | None = None,
                 limit: str | None = None, retry_after_s: float | None = None):
        super().__init__(status, message, code, fields)
        self.limit = limit
        self.retry_after_s = retry_after_s


class ConnectionFailed(ClientError):
    """The service could not be reached, after the retries."""


@dataclass
class JobEnded(ClientError):
    """A job ended without success; ``status`` is its last status document."""

    status: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        s = self.status
        return f"job {s.get('task_id')} ended {s.get('status')}: {s.get('error') or s.get('message')}"


class JobFailed(JobEnded):
    """The job ended FAILURE: ``error`` and ``error_type`` say why; ``attempts`` how often it ran."""

    @property
    def error(self) -> str | None:
        return self.status.get("error")

    @property
    def error_type(self) -> str | None:
        return self.status.get("error_type")


class JobCancelled(JobEnded):
    """The job ended REVOKED."""


@dataclass
class DocumentFailed(ClientError):
    """A document's ingestion ended ``failed``; ``status`` is its status document (``error`` says why)."""

    status: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        s = self.status
        return f"document {s.get('document_id')} failed: {s.get('error')}"

    @property
    def error(self) -> str | None:
        return self.status.get("error")


class WaitTimeout(ClientError, TimeoutError):
    """The job did not end within the time given to ``wait``; it goes on running."""


_BY_STATUS: dict[int, type[ApiError]] = {400: ValidationError, 413: ValidationError, 401: Unauthorized,
                                         404: NotFound, 503: ServiceUnavailable}


def raise_for(response: httpx.Response) -> None:
    """Raise the matching ApiError for an error answer; return for success (2xx)."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("error") or response.reason_phrase or "error")
    fields = [FieldProblem(str(f.get("field")), str(f.get("message"))) for f in body.get("fields") or []
              if isinstance(f, dict)]
    code = str(body.get("code") or "error")
    if response.status_code == 429:
        retry = body.get("retry_after_s", response.headers.get("Retry-After"))
        raise RateLimited(429, message, code, fields, str(body.get("limit") or "") or None,
                          float(retry) if isinstance(retry, (int, float, str)) and str(retry) else None)
    cls = _BY_STATUS.get(response.status_code, ApiError)
    raise cls(response.status_code, message, code, fields)
