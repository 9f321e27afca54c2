"""aitasks: a self-hosted service for running AI jobs in the background.

``from aitasks import Client, AsyncClient`` gives the Python client (loaded on first use, so the
service's own processes do not pay for it, nor for httpx).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# The Python client's public names (tests/test_public_api.py pins them), all from aitasks.client.
__all__ = [
    "ApiError",
    "AsyncClient",
    "AsyncJob",
    "Client",
    "ClientError",
    "ConnectionFailed",
    "DocumentFailed",
    "FieldProblem",
    "Job",
    "JobCancelled",
    "JobEnded",
    "JobFailed",
    "NotFound",
    "RateLimited",
    "ServiceUnavailable",
    "Unauthorized",
    "ValidationError",
    "WaitTimeout",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on first use
    from aitasks.client import (
        ApiError,
        AsyncClient,
        AsyncJob,
        Client,
        ClientError,
        ConnectionFailed,
        DocumentFailed,
        FieldProblem,
        Job,
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


def __getattr__(name: str) -> Any:
    if name in __all__:
        from aitasks import client

        return getattr(client, name)
    raise AttributeError(f"module 'aitasks' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
