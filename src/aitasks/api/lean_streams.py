"""Open SSE streams served below FastAPI's routing, so that each costs little memory while it stays open.

``GET /api/v1/tasks/{task_id}/events`` is a FastAPI route (routes/stream.py: its OpenAPI entry, its
errors). A stream lives for minutes, though, and whatever is on the stack while it lives stays in memory:
FastAPI's solved dependencies and exit stacks, Starlette's streaming response with its anyio task group,
the middleware frames. That was ~50 KB a stream (bench/streams_bench.py). This serves a stream it can open
(a valid key or stream token, the caller's job) with one task, the hub's mailbox and one listener for the
client leaving, in the same bytes as the route; any refusal (no key, an unknown job, a bad token, Redis
away) goes on to the route, which answers it exactly as before, except ``max_streams``' 429, answered here
(going on would count the stream again).

It runs as the outermost layer of the application (app.AitasksAPI) when FastAPI's own telemetry is off
(the default), so that no middleware frame stays on an open stream's stack either; with that telemetry on,
it runs as a middleware inside it (each request's span then covers its stream, as before). Issue 22.
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
from aitasks.api.views import base_url
from aitasks.errors import TooManyRequests

log = logging.getLogger(__name__)
PATH = re.compile(r"/api/v1/tasks/([^/]+)/events")
_START_HEADERS = StreamingResponse((), media_type="text/event-stream", headers=SSE_HEADERS).raw_headers
PASSED = "aitasks.lean_streams.passed"  # scope key: tried already, the route answers (no second try below)


def stream_path(scope: Scope) -> str | None:
    """The task id of an SSE stream request this serves, else None."""
    if scope["type"] != "http" or scope["method"] != "GET" or PASSED in scope:
        return None
    match = PATH.fullmatch(scope["path"])
    return match.group(1) if match else None


class LeanEventStreams:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task_id = stream_path(scope)
        if task_id is None:
            await self.app(scope, receive, send)
        else:
            await serve_stream(task_id, scope, receive, send, self.app)


async def serve_stream(task_id: str, scope: Scope, receive: Receive, send: Send, route: ASGIApp) -> None:
    """Serve the stream, or pass it on to ``route`` (which then answers the refusal)."""
    request = Request(scope, receive)
    try:
        services = scope["app"].state.services
        tenant = await stream_tenant(request, request.query_params.get("token"))
        job = await load_job(services, tenant, task_id)
        base = base_url(services, request)
    except Exception:  # noqa: BLE001 (every refusal is the route's to answer, in its words)
        scope[PASSED] = True
        await route(scope, receive, send)
        return
    key_digest = stream_key_digest(request)
    del request  # nothing of it is needed while the stream stays open
    slots = services.streams
    try:  # max_streams: one round trip to open, one to close (api/stream_slots.py)
        member = await slots.open(tenant) if slots is not None else None
    except TooManyRequests as exc:
        answer = JSONResponse(error_body(exc.message, exc.code, exc.fields, exc.extra), exc.status, exc.headers)
        await answer(scope, receive, send)
        return
    except Exception:  # noqa: BLE001 (Redis away: the route answers it)
        scope[PASSED] = True
        await route(scope, receive, send)
        return
    # The job goes to its generator, which lets it go once its first state is sent: not kept by this frame.
    updates = job_updates(services, base, job, key_digest)
    del job
    try:  # an error once the response started: uvicorn logs it and closes the connection
        await serve(task_id, updates, receive, send)
    finally:
        if member is not None:
            await asyncio.shield(slots.close(tenant, member))


async def serve(task_id: str, updates: Any, receive: Receive, send: Send) -> None:
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
        final: str | None = None
        tail = b""
        try:
            async for update in updates:
                if update is not None:
                    final = update["status"]
                # `update` unbound before the wait: the stream keeps no state document while it waits.
                body = sse_message(update)
                del update
                await send({"type": "http.response.body", "body": body, "more_body": True})
                del body
            if final is not None:
                tail = b"event: end\ndata: %s\n\n" % orjson.dumps({"task_id": task_id, "status": final})
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
        await updates.aclose()  # its mailbox and key watch released now, not when collected
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
