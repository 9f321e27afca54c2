"""Live job events for the API: one Redis pub/sub connection per API process, fanned out in memory.

Workers publish each change of a job on ``aitasks:events:<id>`` (see scripts.UPDATE). The hub
pattern-subscribes once and hands events to the SSE/WebSocket handlers and waiting submits that
asked for that job. After a lost connection it hands every subscriber ``RESYNC``, so they re-read
the record instead of trusting that no event was missed.

Each subscriber's mailbox holds at most ``MAILBOX`` events: a stream whose client reads slower than its
job changes would otherwise buffer without bound. A full mailbox is emptied and given ``OVERFLOW``
instead: a stream then ends with a clear message (the client reconnects and starts from the current
state), a waiting submit just re-reads the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import redis.asyncio as aredis

from aitasks.jobs import keys

log = logging.getLogger(__name__)

RESYNC: dict[str, Any] = {"resync": True}
OVERFLOW: dict[str, Any] = {"resync": True, "overflow": True}
MAILBOX = 64  # events a subscriber may have waiting
_PREFIX_LEN = len(keys.events(""))


class Mailbox:
    """A subscriber's events: the part of ``asyncio.Queue`` the hub and its one reader use, in less memory.

    Each open stream holds one for as long as it stays open, so its size counts (issue 22, 10,000 streams a
    process): ``asyncio.Queue`` keeps three deques (~600 B each, even empty) and an ``Event`` with a fourth;
    this keeps a list and, while its reader waits, one future. One reader at a time (``get``)."""

    __slots__ = ("_items", "_waiter", "maxsize")

    def __init__(self, maxsize: int = MAILBOX) -> None:
        self._items: list[dict[str, Any]] = []
        self._waiter: asyncio.Future[None] | None = None
        self.maxsize = maxsize

    def qsize(self) -> int:
        return len(self._items)

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, event: dict[str, Any]) -> None:
        if len(self._items) >= self.maxsize:
            raise asyncio.QueueFull
        self._items.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> dict[str, Any]:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    async def get(self) -> dict[str, Any]:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def clear(self) -> None:
        self._items.clear()


def offer(mailbox: Mailbox, event: dict[str, Any], overflow: dict[str, Any] = OVERFLOW) -> None:
    """Put ``event`` in a subscriber's mailbox; a full one is emptied and gets ``overflow`` instead."""
    try:
        mailbox.put_nowait(event)
    except asyncio.QueueFull:
        mailbox.clear()
        mailbox.put_nowait(overflow)


def new_mailbox() -> Mailbox:
    return Mailbox(MAILBOX)


class EventHub:
    def __init__(self, client: aredis.Redis, on_control: Callable[[dict[str, Any]], None] | None = None):
        self.r = client
        self.on_control = on_control
        self.connected = asyncio.Event()
        self._subscribers: dict[str, set[Mailbox]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="aitasks-event-hub")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.asynccontextmanager
    async def subscribe(self, job_id: str) -> AsyncIterator[Mailbox]:
        queue = new_mailbox()
        self._subscribers[job_id].add(queue)
        try:
            yield queue
        finally:
            subs = self._subscribers.get(job_id)
            if subs is not None:
                subs.discard(queue)
                if not subs:
                    del self._subscribers[job_id]

    async def _run(self) -> None:
        while True:
            pubsub = self.r.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(keys.EVENTS_PATTERN)
                await pubsub.subscribe(keys.CONTROL_CHANNEL)
                self.connected.set()
                self._broadcast(RESYNC)
                async for message in pubsub.listen():
                    self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # connection lost: retry, never let the hub die
                if self.connected.is_set():
                    log.warning("event hub lost Redis (%s); reconnecting", exc)
                self.connected.clear()
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode()
        if channel == keys.CONTROL_CHANNEL:
            if self.on_control:
                self.on_control(orjson.loads(message["data"]))
            return
        if not channel:
            return
        subs = self._subscribers.get(channel[_PREFIX_LEN:])
        if not subs:
            return  # parse only what somebody waits for
        event = orjson.loads(message["data"])
        for queue in subs:
            offer(queue, event)

    def _broadcast(self, event: dict[str, Any]) -> None:
        for subs in self._subscribers.values():
            for queue in subs:
                offer(queue, event)
