"""The Python client of an aitasks service: ``Client`` (sync) and ``AsyncClient`` (asyncio)."""

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
    ServiceUnavailable,
    Unauthorized,
    ValidationError,
    WaitTimeout,
)
from aitasks.client.sync import Client, Job

__all__ = [
    "ApiError", "AsyncClient", "AsyncJob", "Client", "ClientError", "ConnectionFailed", "DocumentFailed", "FieldProblem", "Job",
    "JobCancelled", "JobEnded", "JobFailed", "NotFound", "ServiceUnavailable", "Unauthorized", "ValidationError",
    "WaitTimeout",
]
