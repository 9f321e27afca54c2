"""Live updates: Server-Sent Events and WebSockets, pushed from worker events (no polling loop).

Each stream subscribes first, then sends the current state (a late subscriber sees where the job
is), then every newer change in order (by the record's sequence number), and ends after a terminal
state. A client that reads slower than its job changes fills its mailbox (jobs/events.py): its stream
ends with an error naming that (SSE ``event: error``, WebSocket close 1013), and it reconnects to the
current state. An open SSE stream is served by api/lean_streams.py; this route answers its refusals.
Each open stream holds one of its tenant's ``max_streams`` slots (api/stream_slots.py): over it, SSE answers
429 before the stream opens, a WebSocket gets the JSON error and close code 4429.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from aitasks.api.routing import ApiRoute
from aitasks.api import schemas
from aitasks.api.errors import error_body
from aitasks.api.stream_slots import WS_CLOSE_CODE
from aitasks.api.deps import ServicesDep, StreamTenant, load_job, stream_key_digest, websocket_grant
from aitasks.api.services import REVOKED, Services
from aitasks.jobs.events import OVERFLOW
from aitasks.api.views import base_url
from aitasks.errors import NotFound, TooManyRequests
from aitasks.jobs.models import STATUS_MESSAGES, Job, Status
from aitasks.jobs.status_document import status_document

router = APIRouter(tags=["live updates"], route_class=ApiRoute)
KEEPALIVE_S = 15.0
MAX_STREAMS: dict[str, Any] = {"model": schemas.RateLimitedBody, "headers": {"Retry-After": schemas.RATE_LIMIT_HEADERS[
    "Retry-After"]}, "description": "The tenant already holds its `max_streams` open streams, WebSockets and "
                                    "waiting submits (`limit`: `max_streams`, with `streams` open): none opened."}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event_view(event: dict[str, Any]) -> dict[str, Any]:
    status = Status(event["status"])
    view = dict(event)
    view["message"] = event.get("message") or STATUS_MESSAGES[status]
    view["result_available"] = status is Status.SUCCESS
    return view


class KeyRevoked(Exception):
    """The key that opened the stream was revoked while it was open."""


class SlowConsumer(Exception):
    """The client read slower than its job changed: its mailbox filled (jobs/events.py)."""

    MESSAGE = ("This stream fell too far behind its job's changes (the client reads too slowly) and was "
               "closed; reconnect to continue from the current state.")

    def body(self) -> dict[str, str]:
        return {"error": self.MESSAGE, "code": "slow_consumer"}

    def sse(self) -> bytes:
        return b"event: error\ndata: %s\n\n" % orjson.dumps(self.body())


def sse_message(update: dict[str, Any] | None) -> bytes:
    """One SSE message of ``job_updates``: a state, or a keepalive comment for ``None``."""
    if update is None:
        return b": keepalive\n\n"
    return b"id: %d\ndata: %s\n\n" % (update.get("seq", 0), orjson.dumps(update))


async def job_updates(services: Services, base: str, job: Job,
                      key_digest: str | None) -> AsyncIterator[dict[str, Any] | None]:
    """The job's states in order: the current one, then each change; ``None`` marks a keepalive tick.
    ``base``: the API's URL, for the result's links (views.base_url). Raises KeyRevoked when the key
    ``key_digest`` names is revoked meanwhile, SlowConsumer when the stream's mailbox overflowed.

    An open stream spends most of its life suspended in here, and whatever its frame refers to stays in
    memory that long (issue 22: 10,000 streams a process). So it keeps the job's id and sequence number, not
    the records it read (~2.5 KB each), and no ExitStack (a deque of ~600 B)."""
    job_id = job.id
    async with services.hub.subscribe(job_id) as events:
        watched = key_digest is not None and services.watch_key(key_digest, events)
        try:
            if watched and await services.grant_for_digest(key_digest) is None:  # type: ignore[arg-type]
                raise KeyRevoked()  # revoked between the key check and now: no message will come
            # `job`: the caller's, the answer when Redis let a recorded job go.
            last_seq, ended, view = await _state(services, job_id, base, job)  # type: ignore[misc]
            del job
            yield view
            if ended:
                return
            del view
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE_S):  # not wait_for: no task per wait
                        event = await events.get()
                except TimeoutError:
                    event = {"resync": True}  # quiet: re-read, in case an event was lost
                    yield None
                if event is REVOKED:
                    raise KeyRevoked()
                if event is OVERFLOW:
                    raise SlowConsumer()
                if event.get("resync"):
                    del event
                    seq = await services.store.seq(job_id)  # one field; the record only when it changed
                    if seq is not None and seq <= last_seq:
                        continue
                    fresh = await _state(services, job_id, base)
                    if fresh is None:
                        return
                    if fresh[0] > last_seq:
                        last_seq, ended, view = fresh
                        del fresh
                        yield view
                        if ended:
                            return
                        del view
                    else:
                        del fresh  # not kept while the stream waits
                    continue
                if event.get("seq", 0) <= last_seq:
                    continue
                last_seq = event["seq"]
                if Status(event["status"]).is_terminal():
                    final = await _state(services, job_id, base)
                    yield final[2] if final else event_view(event)
                    return
                view = event_view(event)
                del event
                yield view
                del view
        finally:
            if watched:
                services.unwatch_key(key_digest, events)  # type: ignore[arg-type]


async def _state(services: Services, job_id: str, base: str,
                 recorded: Job | None = None) -> tuple[int, bool, dict[str, Any]] | None:
    """The job's record read again: (its seq, whether it ended, its full state); None when Redis has none
    (and no ``recorded`` one was given). The record itself is not kept."""
    job = await services.store.get(job_id) or recorded
    return (job.seq, job.status.is_terminal(), _full(job, base)) if job is not None else None


def _full(job: Job, base: str) -> dict[str, Any]:
    view = status_document(job, base)
    view["seq"] = job.seq
    return view


@router.get(
    "/api/v1/tasks/{task_id}/events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"example": 'id: 3\ndata: {"task_id": "...", "status": '
                                                                  '"PROCESSING", "progress": 50, ...}\n\n'}}},
               **schemas.errors(401, 404), 429: MAX_STREAMS},
    summary="Live updates (Server-Sent Events)",
)
async def task_events(request: Request, task_id: str, services: ServicesDep,
                      tenant: StreamTenant) -> StreamingResponse:
    """Each state and progress change as an SSE message whose data is the status JSON (plus `seq`,
    and `result` when done). The stream ends with `event: end` after a terminal state.

    Browsers (EventSource cannot send headers) pass `?token=` from `POST /api/v1/stream-tokens` instead."""
    job = await load_job(services, tenant, task_id)
    key_digest = stream_key_digest(request)
    slots = services.streams
    member = await slots.open(tenant) if slots is not None else None  # max_streams: 429 before it opens

    async def stream() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        final: dict[str, Any] | None = None
        try:
            async for update in job_updates(services, base_url(services, request), job, key_digest):
                if update is not None:
                    final = update
                yield sse_message(update)
        except KeyRevoked:
            # Closed without `end`: a client reconnects, as after any cut, and gets the 401.
            yield b": the API key was revoked\n\n"
            return
        except SlowConsumer as exc:
            yield exc.sse()
            return
        if final is not None:
            yield b"event: end\ndata: %s\n\n" % orjson.dumps({"task_id": task_id, "status": final["status"]})

    response = CountedStream(stream(), media_type="text/event-stream", headers=SSE_HEADERS)
    if slots is not None and member is not None:
        response.on_close = lambda: slots.close(tenant, member)
    return response


class CountedStream(StreamingResponse):
    """Releases its stream slot however the response ends (a generator never started runs no ``finally``)."""

    on_close: Callable[[], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if self.on_close is not None:
                await asyncio.shield(self.on_close())


async def ws_job(ws: WebSocket, services: Services, task_id: str) -> tuple[Job, str] | None:
    """Accept the WebSocket and return the caller's job and key digest, or refuse it (a JSON error, then
    4401/4404)."""
    grant = await websocket_grant(ws)
    await ws.accept()
    if grant is None:
        await ws.send_json({"error": "A valid API key is required (Authorization: Bearer <key>).",
                            "code": "unauthorized"})
        await ws.close(code=4401)
        return None
    try:
        return await load_job(services, grant.tenant, task_id), grant.digest
    except NotFound as exc:
        await ws.send_json({"error": exc.message, "code": exc.code})
        await ws.close(code=4404)
        return None


@router.websocket("/api/v1/tasks/{task_id}/ws")
async def task_ws(ws: WebSocket, task_id: str) -> None:
    """Same messages as the SSE stream, one JSON object each; closed (1000) after a terminal state."""
    await serve_ws(ws, task_id, lambda update: update)


async def serve_ws(ws: WebSocket, task_id: str, render: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Push the job's updates, each as ``render`` shapes it, then close (1000) after a terminal state."""
    services: Services = ws.app.state.services
    opened = await ws_job(ws, services, task_id)
    if opened is None:
        return
    job, key_digest = opened
    slots = services.streams
    try:  # max_streams: refused with the JSON error, then close code 4429
        member = await slots.open(job.tenant) if slots is not None else None
    except TooManyRequests as exc:
        await ws.send_json(error_body(exc.message, exc.code, exc.fields, exc.extra))
        await ws.close(code=WS_CLOSE_CODE, reason="max_streams")
        return
    try:
        async for update in job_updates(services, base_url(services, ws), job, key_digest):
            if update is not None:
                await ws.send_text(orjson.dumps(render(update)).decode())
        await ws.close(code=1000)
    except KeyRevoked:
        await ws.send_json({"error": "The API key was revoked.", "code": "unauthorized"})
        await ws.close(code=4401)
    except SlowConsumer as exc:
        await ws.send_json(exc.body())
        await ws.close(code=1013)  # try again later
    except WebSocketDisconnect:
        pass
    finally:
        if slots is not None and member is not None:
            await asyncio.shield(slots.close(job.tenant, member))

