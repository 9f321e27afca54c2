"""The Python client of an aitasks service: ``AsyncClient`` (asyncio) and ``Client`` (blocking, generated
from it by scripts/unasync.py); ``sse`` parses Server-Sent Events for both (and for the tests)."""

from aitasks.client.async_client import AsyncClient, AsyncJob
from aitasks.client.errors import (
    ApiError,
    ClientError,
    ConnectionFailed,
    DocumentFailed,
    FieldProblem,
    JobCancelled,
    JobEnded,
    JobFailed,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    ValidationError,
    WaitTimeout,
)
from aitasks.client.sync import Client, Job

__all__ = [
    "ApiError", "AsyncClient", "AsyncJob", "Client", "ClientError", "ConnectionFailed", "DocumentFailed",
    "FieldProblem", "Job", "JobCancelled", "JobEnded", "JobFailed", "NotFound", "RateLimited", "ServiceUnavailable",
    "Unauthorized", "ValidationError", "WaitTimeout",
]
