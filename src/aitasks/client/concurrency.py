"""The few calls whose asyncio and blocking forms differ by more than ``await``, written by hand in
pairs: ``async_x`` for async_client.py, ``x`` for the sync.py that scripts/unasync.py generates from it
(it turns ``await concurrency.async_x(...)`` into ``concurrency.x(...)``). Everything else is shared.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from aitasks.client.errors import WaitTimeout
from aitasks.client.protocol import Deadline

T = TypeVar("T")


async def async_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


async def async_write_bytes(path: Path, data: bytes) -> None:
    await asyncio.to_thread(path.write_bytes, data)  # a disk write must not stall the event loop


def write_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data)


async def async_notify(callback: Callable[[dict[str, Any]], Any], doc: dict[str, Any]) -> None:
    """An ``on_progress`` callback may be a plain function or a coroutine function."""
    maybe = callback(doc)
    if inspect.isawaitable(maybe):
        await maybe


def notify(callback: Callable[[dict[str, Any]], Any], doc: dict[str, Any]) -> None:
    callback(doc)


async def async_within(wait: Awaitable[T], deadline: Deadline, expired: Callable[[], WaitTimeout]) -> T:
    """asyncio's own timeout around a whole wait: it ends on time even during a silent stream read."""
    remaining = deadline.remaining()
    if remaining is None:
        return await wait
    try:
        return await asyncio.wait_for(wait, remaining)
    except WaitTimeout:
        raise
    except TimeoutError:
        raise expired() from None


def within(value: T, deadline: Deadline, expired: Callable[[], WaitTimeout]) -> T:
    """Blocking code cannot be interrupted: the wait already ran, bounded by its own deadline checks
    and by each stream read's timeout (the time left, and the service's keepalives every 15 s)."""
    return value
