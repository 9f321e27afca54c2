"""How a job is shown: result bodies with artifact links, and waiting for a job to end."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from typing import Any

from fastapi import Request
from starlette.requests import HTTPConnection

from aitasks.api.services import Services
from aitasks.errors import FieldError, ValidationFailed
from aitasks.jobs.status_document import result_with_links
from aitasks.jobs.models import Job, Status
from aitasks.store.history import recorded_job


_BASE_URLS: dict[tuple[Any, ...], str] = {}


def base_url(services: Services, request: HTTPConnection) -> str:
    if services.settings.public_url:
        return services.settings.public_url.rstrip("/")
    # Starlette builds a URL object per call (~15 µs, on every submit); the answer only depends on these.
    scope = request.scope
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    server = scope.get("server")  # a tuple from uvicorn, a list from some servers (Starlette's TestClient)
    cache_key = (scope.get("scheme"), host, tuple(server) if server else None, scope.get("root_path", ""))
    cached = _BASE_URLS.get(cache_key)
    if cached is None:
        url = str(request.base_url).rstrip("/")
        cached = "http" + url[2:] if url.startswith("ws") else url  # links from a WebSocket point at HTTP
        if len(_BASE_URLS) >= 256:  # many Host names: keep the cache bounded
            _BASE_URLS.clear()
        _BASE_URLS[cache_key] = cached
    return cached


def links(base: str, job_id: str) -> dict[str, str]:
    return {
        "status_url": f"{base}/api/v1/tasks/{job_id}/status/",
        "result_url": f"{base}/api/v1/tasks/{job_id}/result/",
        "events_url": f"{base}/api/v1/tasks/{job_id}/events",
    }


async def result_payload(services: Services, request: HTTPConnection, job: Job, inline: bool = True) -> dict[str, Any]:
    """The job's result with absolute artifact URLs; an image result also inlined as base64 (seed 001)."""
    result = result_with_links(job, base_url(services, request))
    image = result.get("image_artifact")
    if inline and isinstance(image, str) and any(a.name == image for a in job.artifacts):
        try:
            data = await asyncio.to_thread(services.artifacts.read, job.id, image)
            result["image_data"] = base64.b64encode(data).decode()
        except FileNotFoundError:
            result["image_data"] = None
    return result


async def finished_body(services: Services, request: HTTPConnection, job: Job, inline: bool = True) -> dict[str, Any]:
    """A waiting submit's answer once the job ended: its status, links and (on success) its result."""
    body = job.status_view() | links(base_url(services, request), job.id)
    if job.status is Status.SUCCESS:
        body["result"] = await result_payload(services, request, job, inline)
    return body


async def result_body(services: Services, request: Request, job: Job, inline: bool = True) -> tuple[int, dict[str, Any]]:
    """The seed's /result/ answer: 200 done, 202 not yet, 500 failed (as seed 001), 410 cancelled."""
    if job.status is Status.SUCCESS:
        return 200, {"task_id": job.id, "status": job.status.value,
                     "result": await result_payload(services, request, job, inline)}
    if job.status is Status.FAILURE:
        return 500, {"task_id": job.id, "status": job.status.value, "error": job.error_message,
                     "error_type": job.error_type, "attempts": job.attempts}
    if job.status is Status.REVOKED:
        return 410, {"task_id": job.id, "status": job.status.value, "error": "Task was cancelled",
                     "message": job.message}
    return 202, {"task_id": job.id, "status": job.status.value, "progress": job.progress,
                 "message": "Task not completed yet"}


_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait(?:\s*=\s*(\d+(?:\.\d+)?))?(?=$|[,;\s])", re.IGNORECASE)


def prefer_wait_s(prefer: str | None, max_wait_s: float) -> float | None:
    """Seconds asked for by ``Prefer: wait=N`` (``wait`` alone: the maximum); None when absent."""
    if not prefer:
        return None
    match = _PREFER_WAIT.search(prefer)
    if not match:
        return None
    if match.group(1) is None:
        return max_wait_s
    value = float(match.group(1))
    if value > max_wait_s:
        raise ValidationFailed(f"Prefer: wait={value:g} is over the maximum of {max_wait_s:g} seconds",
                               [FieldError("Prefer", f"wait must be at most {max_wait_s:g}")])
    return value


async def wait_for_end(services: Services, tenant: str, job_id: str, timeout_s: float) -> Job | None:
    """Wait until the job ends or the time runs out; returns the final record, or None on timeout. A job
    Redis let go of once recorded (AITASKS_RECORDED_KEEP_S) is read from the store of record."""
    deadline = time.monotonic() + timeout_s
    if services.outbox is not None and services.outbox.holding and await services.outbox.find(job_id):
        return None  # waiting in the outbox for Redis: answered 202 at once, as accepted
    async with services.hub.subscribe(job_id) as events:
        while True:
            job = await services.store.get(job_id)
            if job is None:
                return await recorded_job(services.settings.resolved_database_url, tenant, job_id)
            if job.status.is_terminal():
                return job
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                # A re-read every 5 s guards against an event lost while the hub reconnected.
                event = await asyncio.wait_for(events.get(), timeout=min(left, 5.0))
            except TimeoutError:
                continue
            while event.get("status") not in {s.value for s in Status if s.is_terminal()} and not event.get("resync"):
                try:
                    event = await asyncio.wait_for(events.get(), timeout=max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    break
