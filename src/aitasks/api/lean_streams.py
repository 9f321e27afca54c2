"""Open SSE streams served below FastAPI's routing, so that each costs little memory while it stays open.

``GET /api/v1/tasks/{task_id}/events`` is a FastAPI route (routes/stream.py: its OpenAPI entry, its
errors). A stream lives for minutes, though, and whatever is on the stack while it lives stays in memory:
FastAPI's solved dependencies and exit stacks, Starlette's streaming response with its anyio task group,
the middleware frames. That was ~50 KB a stream (bench/streams_bench.py). This middleware serves a stream
it can open (a valid key or stream token, the caller's job) with one task, the hub's mailbox and one
listener for the client leaving, in the same bytes as the route; any refusal (no key, an unknown job, a
bad token, Redis away) goes on to the route, which answers it exactly as before, except ``max_streams``'
429, answered here (going on would count the stream again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from aitasks.api.deps import load_job, stream_key_digest, stream_tenant
from aitasks.api.errors import error_body
from aitasks.api.routes.stream import SSE_HEADERS, KeyRevoked, SlowConsumer, job_updates, sse_message
from aitasks.errors import TooManyRequests

log = logging.getLogger(__name__)
PATH = re.compile(r"/api/v1/tasks/([^/]+)/events")
_START_HEADERS = StreamingResponse((), media_type="text/event-stream", headers=SSE_HEADERS).raw_headers


class LeanEventStreams:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = PATH.fullmatch(scope["path"]) if scope["type"] == "http" and scope["method"] == "GET" else None
        if match is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            services = scope["app"].state.services
            tenant = await stream_tenant(request, request.query_params.get("token"))
            job = await load_job(services, tenant, match.group(1))
        except Exception:  # noqa: BLE001 (every refusal is the route's to answer, in its words)
            await self.app(scope, receive, send)
            return
        slots = services.streams
        try:  # max_streams: one round trip to open, one to close (api/stream_slots.py)
            member = await slots.open(tenant) if slots is not None else None
        except TooManyRequests as exc:
            answer = JSONResponse(error_body(exc.message, exc.code, exc.fields, exc.extra), exc.status, exc.headers)
            await answer(scope, receive, send)
            return
        except Exception:  # noqa: BLE001 (Redis away: the route answers it)
            await self.app(scope, receive, send)
            return
        try:
            await serve(request, services, job, stream_key_digest(request), receive, send)
        finally:
            if member is not None:
                await asyncio.shield(slots.close(tenant, member))


async def serve(request: Request, services: Any, job: Any, key_digest: str | None, receive: Receive,
                send: Send) -> None:
    """The stream, as the route writes it; ends when the job ends, the key is revoked, the client falls
    behind (a clear ``event: error``) or leaves (a listener of the connection cancels this task)."""
    this = asyncio.current_task()
    assert this is not None
    state = {"left": False, "done": False}

    async def listen() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not state["done"]:
            state["left"] = True
            this.cancel()

    listener = asyncio.create_task(listen())
    try:
        await send({"type": "http.response.start", "status": 200, "headers": _START_HEADERS})
        await send({"type": "http.response.body", "body": b"retry: 2000\n\n", "more_body": True})
        final: dict[str, Any] | None = None
        tail = b""
        try:
            async for update in job_updates(services, request, job, key_digest):
                if update is not None:
                    final = update
                await send({"type": "http.response.body", "body": sse_message(update), "more_body": True})
            if final is not None:
                tail = b"event: end\ndata: %s\n\n" % orjson.dumps({"task_id": job.id, "status": final["status"]})
        except KeyRevoked:  # closed without `end`: a client reconnects, as after any cut, and gets the 401
            tail = b": the API key was revoked\n\n"
        except SlowConsumer as exc:
            tail = exc.sse()
        state["done"] = True
        await send({"type": "http.response.body", "body": tail, "more_body": False})
    except asyncio.CancelledError:
        if not state["left"]:
            raise
        this.uncancel()  # the client left: nothing more to send, nothing to report
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
