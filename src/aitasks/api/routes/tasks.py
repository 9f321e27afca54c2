"""The seeds' task endpoints (/api/v1/tasks/...) and our extensions: list, artifacts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from pydantic import WithJsonSchema
from fastapi.responses import Response, StreamingResponse

from aitasks.api import schemas
from aitasks.api.artifact_download import artifact_response
from aitasks.api.deps import ServicesDep, Tenant, load_job
from aitasks.api.outboxed_jobs import load_job_or_outboxed
from aitasks.api.responses import FastJSONResponse as JSONResponse
from aitasks.api.routing import ApiRoute
from aitasks.api.services import Services
from aitasks.api.submit_request import submit_doc, submit_request
from aitasks.api.task_filters import STATUS_LIST_SCHEMA, TIME_SCHEMA, parse_filters
from aitasks.api.views import base_url, finished_body, links, result_body
from aitasks.errors import Conflict, FieldError, NotFound, ServiceUnavailable, ValidationFailed
from aitasks.jobs.artifacts import check_name
from aitasks.jobs.dispatch import queue_position
from aitasks.jobs.models import Job, Status
from aitasks.store import export
from aitasks.store.history import list_page, recorded_deliveries

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"], route_class=ApiRoute)


def _alias(path: str) -> str:
    """The no-slash spelling, relative to the router (route.path already carries the prefix)."""
    return path.removeprefix(router.prefix).rstrip("/")


@router.post(
    "/submit/", status_code=202, response_model=schemas.SubmitResponse, openapi_extra=submit_doc(),
    responses={200: {"model": schemas.SubmitResponse | schemas.FinishedResponse,
                     "description": "Idempotency-Key repeated: the first task; or, with `Prefer: wait`, "
                                    "the finished task with its result."},
               **schemas.errors(400, 401, 403, 413, 429, 503, 507)},
    summary="Submit a task",
)
async def submit(request: Request, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """Accepts a job and answers at once with its id (`202`). Files go as base64 fields or multipart parts.

    The worker runs it; the API never runs AI code. With `Prefer: wait=N` the request stays open until
    the job ends (`200`, with the result) or N seconds pass (the usual `202`); `?async_processing=false`
    (seed 003) does the same for up to `AITASKS_SYNC_WAIT_S` (30 s). `?inline=false` leaves an image
    result's base64 out of that `200`: fetch the file from its URL instead.
    """
    done = await submit_request(request, services, tenant)
    if done.final is not None:
        applied = {"Preference-Applied": f"wait={done.wait_s:g}"} if done.preferred else None
        return JSONResponse(await finished_body(services, request, done.final, done.inline), 200, headers=applied)
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


StatusFilter = Annotated[list[Annotated[str, WithJsonSchema(STATUS_LIST_SCHEMA)]] | None, Query(
    description="Filter: one or more statuses (repeat or comma-separate; any case).")]
TypeFilter = Annotated[str | None, Query(description="Filter: one job type.")]
AfterFilter = Annotated[Annotated[str, WithJsonSchema(TIME_SCHEMA)] | None, Query(
    description="Filter: created at or after this time (ISO 8601, e.g. `2026-12-01T00:00:00Z`; no zone is UTC; "
                "or epoch seconds).")]
BeforeFilter = Annotated[Annotated[str, WithJsonSchema(TIME_SCHEMA)] | None, Query(
    description="Filter: created before this time (ISO 8601 or epoch seconds).")]
TextFilter = Annotated[str | None, Query(max_length=200, description="Filter: text in the message or the error "
                                                                      "(any case).")]


@router.get("/", response_model=schemas.TaskList, responses=schemas.errors(400, 401), summary="List your tasks")
async def list_tasks(
    services: ServicesDep, tenant: Tenant, status: StatusFilter = None, task_type: TypeFilter = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
    created_after: AfterFilter = None, created_before: BeforeFilter = None, q: TextFilter = None,
) -> JSONResponse:
    """The caller's tasks, newest first, with cursor pagination: live ones from Redis and ended ones from
    the store of record (job history beyond the retention time, docs/history.md)."""
    filters = parse_filters(status, task_type, created_after, created_before, q)
    try:
        page = await list_page(services.redis, services.settings.resolved_database_url, tenant, limit, cursor,
                               filters)
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("cursor is not valid", [FieldError("cursor", "is not a cursor this API gave")]) from None
    return JSONResponse({"tasks": [j.status_view() for j in page.jobs], "next_cursor": page.next_cursor})


@router.get("/export", summary="Export your job history (JSON Lines or CSV)", responses={
    200: {"description": "The tenant's ended jobs, newest first, streamed: one JSON object a line (`jsonl`: "
                         "the status document, `input` and `result`) or CSV with a header row.",
          "content": {"application/x-ndjson": {"schema": {"type": "string"}},
                      "text/csv": {"schema": {"type": "string"}}}},
    **schemas.errors(400, 401, 503)})
async def export_tasks(
    services: ServicesDep, tenant: Tenant,
    format: Annotated[Literal["jsonl", "csv"], Query(description="`jsonl` (default) or `csv`.")] = "jsonl",
    status: StatusFilter = None, task_type: TypeFilter = None, created_after: AfterFilter = None,
    created_before: BeforeFilter = None, q: TextFilter = None,
) -> StreamingResponse:
    """Every ended job of the caller recorded in the store of record (docs/history.md), with the list's
    filters, streamed page by page (constant memory, however long the history). Jobs still running, or
    ended less than a moment ago and not yet recorded, are not in it."""
    filters = parse_filters(status, task_type, created_after, created_before, q)
    url = services.settings.resolved_database_url
    try:
        await asyncio.to_thread(export.reachable, url)
    except sa.exc.SQLAlchemyError:
        raise ServiceUnavailable("Job history is unavailable right now; try again shortly") from None

    async def body() -> AsyncIterator[bytes]:
        if format == "csv":
            yield export.csv_header()
        encode = export.csv_lines if format == "csv" else export.jsonl
        pages = export.pages(url, tenant, filters)
        while (page := await asyncio.to_thread(next, pages, None)) is not None:
            yield encode(page)

    name = f"aitasks-{tenant}-history.{format}"
    return StreamingResponse(body(), media_type=export.MEDIA_TYPES[format],
                             headers={"Content-Disposition": f'attachment; filename="{name}"',
                                      "X-Content-Type-Options": "nosniff"})


async def find_job(services: Services, tenant: str, task_id: str) -> tuple[Job, bool]:
    """The job waiting in the outbox (the flag), or the live one from Redis, or the ended one from the
    store of record (SQL; ``load_job``): the same JSON either way, the same 404 for unknown and foreign."""
    return await load_job_or_outboxed(services, tenant, task_id)


@router.get("/{task_id}/status/", response_model=schemas.StatusResponse, responses=schemas.errors(401, 404, 503),
            summary="Task status and progress")
async def task_status(task_id: str, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    job, outboxed = await find_job(services, tenant, task_id)  # outboxed: PENDING, not yet in Redis
    view = job.status_view()
    position = None if outboxed else await queue_position(services.redis, job)
    if position is not None:
        view["queue_position"] = position
    if job.webhook:
        deliveries = [] if outboxed else await services.store.webhook_deliveries(job.id)
        if not deliveries and job.status.is_terminal():  # Redis forgot the log with the job: the history has it
            deliveries = await recorded_deliveries(services.settings.resolved_database_url, tenant, job.id)
        view["webhook"] = {"url": job.webhook, "events": list(job.webhook_events), "deliveries": deliveries}
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
    outcome = await cancel_job(services, await load_job(services, tenant, task_id))
    if outcome is Status.REVOKED:
        return JSONResponse({"task_id": task_id, "message": "Task cancelled successfully",
                             "status": Status.REVOKED.value})
    if outcome is Status.PROCESSING:
        return JSONResponse({"task_id": task_id, "status": Status.PROCESSING.value,
                             "message": "Cancellation requested; the task stops at its next progress "
                                        f"report or is terminated within {services.settings.cancel_grace_s:g}s"})
    job = await load_job(services, tenant, task_id)
    msg = f"Task already completed ({job.status.value}), cannot cancel"
    raise Conflict(msg, extra={"message": msg, "task_id": task_id, "status": job.status.value})


@router.get("/{task_id}/artifacts/{name}", responses={200: {"content": {"application/octet-stream": {}}},
                                                      206: {"description": "The byte range a `Range` header asked for",
                                                            "content": {"application/octet-stream": {}}},
                                                      416: {"description": "A `Range` beyond the file's end",
                                                            "content": {"text/plain": {}}},
                                                      **schemas.errors(401, 404)},
            summary="Download a file of a task")
async def download_artifact(task_id: str, name: str, request: Request, services: ServicesDep,
                            tenant: Tenant) -> Response:
    job = await load_job(services, tenant, task_id)
    try:
        check_name(name)
    except ValueError:
        raise NotFound(f"No file {name!r} for task {task_id}") from None
    if job.finished_at is not None and job.finished_at + job.retention_s < time.time():
        # Past its retention (AITASKS_RETENTION_S): the store of record keeps the job, not its files.
        raise NotFound(f"No file {name!r} for task {task_id} (removed after the task's retention time)")
    known = {a.name: a.media_type for a in job.artifacts}
    if job.input:
        for value in job.input.values():
            if isinstance(value, dict) and value.get("artifact"):
                known[value["artifact"]] = value.get("media_type", "application/octet-stream")
    # A download (api/artifact_download.py): the folder's file, or streamed from the S3 bucket.
    response = (await artifact_response(services.artifacts, job.id, name, known[name], "range" in request.headers)
                if name in known else None)
    if response is None:
        raise NotFound(f"No file {name!r} for task {task_id}")
    return response


# The seeds' clients may drop the trailing slash: serve both spellings (only one in the schema).
for route in list(router.routes):
    path = getattr(route, "path", "")
    if path.endswith("/"):
        router.add_api_route(_alias(path), route.endpoint, methods=list(route.methods), include_in_schema=False,  # type: ignore[attr-defined]
                             status_code=getattr(route, "status_code", None))
