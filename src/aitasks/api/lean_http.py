"""uvicorn's httptools protocol with its per-connection objects made smaller (issue 22).

An open SSE stream keeps its connection's objects alive for minutes, and 10,000 streams a process multiply
them. uvicorn gives every connection three empty ``collections.deque``s (~760 B each under tracemalloc: a
deque allocates a block of 64 slots even when empty): the pipeline of requests waiting behind the current
one, and the waiters of two ``asyncio.Event``s (the request's message event, the flow control's writable
event). Here they are lists, which hold the same 0-2 items in ~60 B. Behaviour is uvicorn's own: the same
methods run on them (``asyncio.Event`` only appends, removes and iterates its waiters; the pipeline only
``appendleft``s and ``pop``s, one request at a time in practice).

`aitasks api` runs uvicorn with ``http=LeanHttpToolsProtocol`` (cli/main.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class LeanEvent(asyncio.Event):
    """``asyncio.Event`` with its waiters in a list instead of a deque."""

    def __init__(self) -> None:
        super().__init__()
        self._waiters = []  # type: ignore[assignment]


class _Pipeline(list[Any]):
    """The deque operations uvicorn uses on its pipeline of requests, on a list."""

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class LeanHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipeline = _Pipeline()  # type: ignore[assignment]

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        writable = LeanEvent()
        if self.flow._is_writable_event.is_set():
            writable.set()
        self.flow._is_writable_event = writable

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        # A new request's cycle: its task is created, not yet run, and nothing waits on its event yet.
        if cycle is not before and cycle is not None and not cycle.message_event.is_set():
            cycle.message_event = LeanEvent()
