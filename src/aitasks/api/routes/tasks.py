"""The seeds' task endpoints (/api/v1/tasks/...) and our extensions: list, artifacts."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from aitasks.api import schemas
from aitasks.api.artifact_download import artifact_response
from aitasks.api.deps import ServicesDep, Tenant, load_job
from aitasks.api.outboxed_jobs import load_job_or_outboxed
from aitasks.api.responses import FastJSONResponse as JSONResponse
from aitasks.api.routing import ApiRoute
from aitasks.api.services import Services
from aitasks.api.submit_request import submit_doc, submit_request
from aitasks.api.views import base_url, finished_body, links, result_body
from aitasks.errors import Conflict, FieldError, NotFound, ValidationFailed
from aitasks.jobs.artifacts import check_name
from aitasks.jobs.models import Job, Status
from aitasks.store.history import list_page, recorded_job
from aitasks.store.records import Filters

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"], route_class=ApiRoute)


def _alias(path: str) -> str:
    """The no-slash spelling, relative to the router (route.path already carries the prefix)."""
    return path.removeprefix(router.prefix).rstrip("/")


@router.post(
    "/submit/", status_code=202, response_model=schemas.SubmitResponse, openapi_extra=submit_doc(),
    responses={200: {"model": schemas.SubmitResponse | schemas.FinishedResponse,
                     "description": "Idempotency-Key repeated: the first task; or, with `Prefer: wait`, "
                                    "the finished task with its result."},
               **schemas.errors(400, 401, 403, 413, 503)},
    summary="Submit a task",
)
async def submit(request: Request, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """Accepts a job and answers at once with its id (`202`). Files go as base64 fields or multipart parts.

    The worker runs it; the API never runs AI code. With `Prefer: wait=N` the request stays open until
    the job ends (`200`, with the result) or N seconds pass (the usual `202`); `?async_processing=false`
    (seed 003) does the same for up to `AITASKS_SYNC_WAIT_S` (30 s).
    """
    done = await submit_request(request, services, tenant)
    if done.final is not None:
        applied = {"Preference-Applied": f"wait={done.wait_s:g}"} if done.preferred else None
        return JSONResponse(await finished_body(services, request, done.final), 200, headers=applied)
    accepted = done.accepted
    job = accepted.job
    body: dict[str, Any] = {
        "task_id": job.id, "status": job.status.value,
        "message": "Task submitted successfully" if accepted.created
        else "Idempotency-Key seen before: this is the first task submitted with it",
        "task_type": job.type, "queue": job.queue, **links(base_url(services, request), job.id),
    }
    headers = {"Location": body["status_url"]}
    return JSONResponse(body, 202 if accepted.created else 200, headers=headers)


@router.get("/", response_model=schemas.TaskList, responses=schemas.errors(400, 401), summary="List your tasks")
async def list_tasks(
    services: ServicesDep, tenant: Tenant,
    status: Annotated[list[str] | None, Query(description="Filter: one or more statuses (repeat or comma-separate).")] = None,
    task_type: Annotated[str | None, Query(description="Filter: one job type.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
    created_after: Annotated[str | None, Query(
        description="Filter: created at or after this time (ISO 8601, e.g. `2026-12-01T00:00:00Z`, or epoch "
                    "seconds).")] = None,
    created_before: Annotated[str | None, Query(
        description="Filter: created before this time (ISO 8601 or epoch seconds).")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Filter: text in the message or the error "
                                                               "(any case).")] = None,
) -> JSONResponse:
    """The caller's tasks, newest first, with cursor pagination: live ones from Redis and ended ones from
    the store of record (job history beyond the retention time, docs/history.md)."""
    wanted: set[Status] | None = None
    if status:
        names = [s.strip().upper() for part in status for s in part.split(",") if s.strip()]
        try:
            wanted = {Status(n) for n in names}
        except ValueError:
            valid = ", ".join(s.value for s in Status)
            raise ValidationFailed(f"status must be one of {valid}", [FieldError("status", f"must be one of {valid}")]) from None
    filters = Filters(wanted, task_type, _time(created_after, "created_after"),
                      _time(created_before, "created_before"), q or None)
    try:
        page = await list_page(services.redis, services.settings.resolved_database_url, tenant, limit, cursor,
                               filters)
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("cursor is not valid", [FieldError("cursor", "is not a cursor this API gave")]) from None
    return JSONResponse({"tasks": [j.status_view() for j in page.jobs], "next_cursor": page.next_cursor})


def _time(value: str | None, name: str) -> float | None:
    """A time filter as epoch seconds: ISO 8601 (no zone: UTC) or a number; else 400 naming ``name``."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else _iso(text)
    except (ValueError, OverflowError):
        raise ValidationFailed(f"{name} is not a time", [FieldError(
            name, "must be an ISO 8601 time (e.g. 2026-12-01T00:00:00Z) or epoch seconds")]) from None


def _iso(text: str) -> float:
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


async def find_job(services: Services, tenant: str, task_id: str) -> tuple[Job, bool]:
    """The live job (Redis, or the outbox: the flag), else the ended one from the store of record (SQL),
    once Redis let it expire or lost it: the same JSON either way, the same 404 for unknown and foreign."""
    try:
        return await load_job_or_outboxed(services, tenant, task_id)
    except NotFound:
        return await _recorded(services, tenant, task_id), False


async def _recorded(services: Services, tenant: str, task_id: str) -> Job:
    job = await recorded_job(services.settings.resolved_database_url, tenant, task_id)
    if job is None:
        raise NotFound(f"No task with id {task_id!r} (unknown, expired, or not yours)")
    return job


async def live_or_recorded(services: Services, tenant: str, task_id: str) -> Job:
    """The job from Redis, else from the store of record (a cancel of an ended job answers 400 either way)."""
    try:
        return await load_job(services, tenant, task_id)
    except NotFound:
        return await _recorded(services, tenant, task_id)


@router.get("/{task_id}/status/", response_model=schemas.StatusResponse, responses=schemas.errors(401, 404, 503),
            summary="Task status and progress")
async def task_status(task_id: str, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    job, outboxed = await find_job(services, tenant, task_id)  # outboxed: PENDING, not yet in Redis
    view = job.status_view()
    if job.webhook:
        view["webhook"] = {"url": job.webhook, "events": list(job.webhook_events),
                           "deliveries": [] if outboxed else await services.store.webhook_deliveries(job.id)}
    return JSONResponse(view)


@router.get("/{task_id}/result/", response_model=schemas.ResultResponse,
            responses={202: {"model": schemas.ResultResponse, "description": "Not finished yet."},
                       410: {"model": schemas.ResultResponse, "description": "Cancelled: no result will come."},
                       500: {"model": schemas.ResultResponse, "description": "The task failed: `error` says why."},
                       **schemas.errors(401, 404, 503)},
            summary="Task result")
async def task_result(
    request: Request, task_id: str, services: ServicesDep, tenant: Tenant,
    inline: Annotated[bool, Query(description="Inline image results as base64 `image_data`.")] = True,
) -> JSONResponse:
    job, _ = await find_job(services, tenant, task_id)
    code, body = await result_body(services, request, job, inline)
    return JSONResponse(body, code)


async def request_cancel(services: Services, job: Job) -> Status | None:
    """Cancel one job: a queued one ends REVOKED now (returns REVOKED), a running one is asked to stop
    (returns PROCESSING); None when it had already finished."""
    now = time.time()
    if job.status in (Status.PENDING, Status.RETRY):
        applied = await services.store.update(job.id, {
            "status": Status.REVOKED.value, "finished_at": now, "cancel_requested_at": now,
            "message": "Cancelled before it started" if job.status is Status.PENDING else "Cancelled",
        }, ttl_s=job.retention_s)
        return Status.REVOKED if applied > 0 else None
    if not job.status.is_terminal():
        applied = await services.store.update(job.id, {"cancel_requested_at": now, "message": "Cancellation requested"})
        return Status.PROCESSING if applied > 0 else None
    return None


async def cancel_job(services: Services, job: Job) -> Status | None:
    """Cancel a job and, for a parent, its children: what ``request_cancel`` returns for the job."""
    outcome = await request_cancel(services, job)
    if outcome is not None:
        # A parent's children go too; re-read after the flag: the fan-out refuses once it is set, so
        # either the children are listed now or they will never be created.
        parent = await services.store.get(job.id)
        for child_id in parent.children if parent else []:
            child = await services.store.get(child_id)
            if child is not None:
                await request_cancel(services, child)
    return outcome


@router.post("/{task_id}/cancel/", response_model=schemas.CancelResponse,
             responses={400: {"model": schemas.InvalidState, "description": "The task already finished."},
                        **schemas.errors(401, 403, 404, 503)},
             summary="Cancel a task")
async def cancel_task(task_id: str, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """A queued task never starts; a running one stops at its next progress report, or is killed after
    a grace period. Either way it ends `REVOKED`. A parent job (e.g. `comparison`) cancels its child
    jobs too, and ends once they have."""
    outcome = await cancel_job(services, await live_or_recorded(services, tenant, task_id))
    if outcome is Status.REVOKED:
        return JSONResponse({"task_id": task_id, "message": "Task cancelled successfully",
                             "status": Status.REVOKED.value})
    if outcome is Status.PROCESSING:
        return JSONResponse({"task_id": task_id, "status": Status.PROCESSING.value,
                             "message": "Cancellation requested; the task stops at its next progress "
                                        f"report or is terminated within {services.settings.cancel_grace_s:g}s"})
    job = await live_or_recorded(services, tenant, task_id)
    msg = f"Task already completed ({job.status.value}), cannot cancel"
    raise Conflict(msg, extra={"message": msg, "task_id": task_id, "status": job.status.value})


@router.get("/{task_id}/artifacts/{name}", responses={200: {"content": {"application/octet-stream": {}}},
                                                      **schemas.errors(401, 404)},
            summary="Download a file of a task")
async def download_artifact(task_id: str, name: str, services: ServicesDep, tenant: Tenant) -> Response:
    job = await load_job(services, tenant, task_id)
    try:
        check_name(name)
    except ValueError:
        raise NotFound(f"No file {name!r} for task {task_id}") from None
    known = {a.name: a.media_type for a in job.artifacts}
    if job.input:
        for value in job.input.values():
            if isinstance(value, dict) and value.get("artifact"):
                known[value["artifact"]] = value.get("media_type", "application/octet-stream")
    # A download (api/artifact_download.py): the folder's file, or streamed from the S3 bucket.
    response = await artifact_response(services.artifacts, job.id, name, known[name]) if name in known else None
    if response is None:
        raise NotFound(f"No file {name!r} for task {task_id}")
    return response


# The seeds' clients may drop the trailing slash: serve both spellings (only one in the schema).
for route in list(router.routes):
    path = getattr(route, "path", "")
    if path.endswith("/"):
        router.add_api_route(_alias(path), route.endpoint, methods=list(route.methods), include_in_schema=False,  # type: ignore[attr-defined]
                             status_code=getattr(route, "status_code", None))
