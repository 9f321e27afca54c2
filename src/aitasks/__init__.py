"""aitasks: a self-hosted service for running AI jobs in the background.

``from aitasks import Client, AsyncClient`` gives the Python client (loaded on first use, so the
service's own processes do not pay for it).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_CLIENT_NAMES = {"Client", "AsyncClient", "Job", "AsyncJob", "JobFailed", "JobCancelled", "NotFound",
                 "Unauthorized", "ValidationError", "ApiError", "WaitTimeout", "ConnectionFailed",
                 "ServiceUnavailable", "ClientError"}


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from aitasks import client

        return getattr(client, name)
    raise AttributeError(f"module 'aitasks' has no attribute {name!r}")
