"""Seed 003's surface, as thin aliases over the platform's own handlers (see docs/seed-003.md).

- ``POST /api/visualizations``, ``/api/visualizations/compare``, ``/api/exports``: submit a
  ``visualization``, ``comparison`` or ``export`` job through the platform's one submit path; with
  ``?async_processing=false`` it waits (as ``Prefer: wait``) up to AITASKS_SYNC_WAIT_S.
- ``/api/tasks/{id}/status|cancel|result``: the platform's status (in the seed's shape), cancel, result.
- ``WS /api/ws/tasks/{id}``: the platform's pushed updates in the seed's envelope.

Seed 004's document paths too: ``POST /api/ingest/`` and ``GET /api/documents/{id}/status/``, as the
handlers of ``/api/v1/documents`` (routes/documents.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, WebSocket
from pydantic import BaseModel, Field

from aitasks.api import schemas
from aitasks.api.deps import ServicesDep, Tenant, load_job
from aitasks.api.document_schemas import INGEST_DOC, UPLOAD_ERRORS, DocumentAccepted, DocumentStatus
from aitasks.api.responses import FastJSONResponse as JSONResponse
from aitasks.api.routes import documents, tasks
from aitasks.api.routes.stream import serve_ws
from aitasks.api.routing import ApiRoute
from aitasks.api.services import Services
from aitasks.api.submit_request import submit_doc, submit_request
from aitasks.api.views import finished_body
from aitasks.jobs.models import STATUS_MESSAGES, Status

router = APIRouter(prefix="/api", tags=["seed 003"], route_class=ApiRoute)


class SeedAccepted(BaseModel):
    task_id: str
    status: str = Field(examples=["processing"], description="Always `processing`, as in the seed.")
    status_url: str = Field(examples=["/api/tasks/5b0d6a1e-3f7c-4a53-9a59-2d0f9f3b1f10/status"])
    websocket_url: str = Field(examples=["/api/ws/tasks/5b0d6a1e-3f7c-4a53-9a59-2d0f9f3b1f10"])


class SeedStatus(BaseModel):
    task_id: str
    state: Status = Field(examples=["PROCESSING"])
    progress: int = Field(ge=0, le=100, examples=[50])
    status: str = Field(description="The human message.", examples=["2 of 3 child jobs finished"])
    error: str | None = Field(None, description="Present when the job failed.")


SUBMIT_RESPONSES: dict[int | str, dict[str, Any]] = {
    202: {"model": SeedAccepted, "description": "Accepted (async), or not finished within the sync bound."},
    200: {"model": schemas.FinishedResponse | SeedAccepted,  # type: ignore[dict-item]
          "description": "`?async_processing=false` and the job ended in time: its status with `result` (as "
          "`Prefer: wait` answers on `POST /api/v1/tasks/submit/`); or the same `Idempotency-Key` sent again: "
          "the first task, in the accepted shape."},
    **schemas.errors(400, 401, 403, 413, 429, 503, 507),
}


async def _seed_submit(request: Request, services: Services, tenant: str, task_type: str) -> JSONResponse:
    done = await submit_request(request, services, tenant, task_type)
    if done.final is not None:
        return JSONResponse(await finished_body(services, request, done.final, done.inline), 200)
    task_id = done.accepted.job.id
    body = {"task_id": task_id, "status": "processing", "status_url": f"/api/tasks/{task_id}/status",
            "websocket_url": f"/api/ws/tasks/{task_id}"}
    return JSONResponse(body, 202 if done.accepted.created else 200, headers={"Location": body["status_url"]})


@router.post("/visualizations", status_code=202, response_model=SeedAccepted, responses=SUBMIT_RESPONSES,
             openapi_extra=submit_doc("visualization"), summary="Submit a visualization (seed 003)")
async def submit_visualization(request: Request, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """A `visualization` job: the processed image and a labelled before/after preview."""
    return await _seed_submit(request, services, tenant, "visualization")


@router.post("/visualizations/compare", status_code=202, response_model=SeedAccepted, responses=SUBMIT_RESPONSES,
             openapi_extra=submit_doc("comparison"), summary="Submit a comparison (seed 003)")
async def submit_comparison(request: Request, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """A `comparison` job: 2-8 variants of one image run as parallel child jobs, then one labelled grid."""
    return await _seed_submit(request, services, tenant, "comparison")


@router.post("/exports", status_code=202, response_model=SeedAccepted, responses=SUBMIT_RESPONSES,
             openapi_extra=submit_doc("export"), summary="Submit an export (seed 003)")
async def submit_export(request: Request, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """An `export` job: a PDF report of the caller's own finished jobs."""
    return await _seed_submit(request, services, tenant, "export")


@router.get("/tasks/{task_id}/status", response_model=SeedStatus, responses=schemas.errors(401, 404),
            summary="Task status (seed 003)")
async def seed_status(task_id: str, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """`{"task_id", "state", "progress", "status"}`: `state` is the job's status, `status` its message."""
    job = await load_job(services, tenant, task_id)
    view = job.status_view()
    body = {"task_id": job.id, "state": job.status.value, "progress": job.progress, "status": view["message"]}
    if job.error_message:
        body["error"] = job.error_message
    return JSONResponse(body)


@router.post("/tasks/{task_id}/cancel", response_model=schemas.CancelResponse,
             responses={400: {"model": schemas.InvalidState, "description": "The task already finished."},
                        **schemas.errors(401, 403, 404)},
             summary="Cancel a task (seed 003)")
async def seed_cancel(task_id: str, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """As `POST /api/v1/tasks/{task_id}/cancel/` (a parent job cancels its children too)."""
    return await tasks.cancel_task(task_id, services, tenant)


@router.get("/tasks/{task_id}/result", response_model=schemas.ResultResponse,
            responses={202: {"model": schemas.ResultResponse, "description": "Not finished yet."},
                       410: {"model": schemas.ResultResponse, "description": "Cancelled: no result will come."},
                       500: {"model": schemas.ResultResponse, "description": "The task failed: `error` says why."},
                       **schemas.errors(401, 404)},
            summary="Task result (seed 003)")
async def seed_result(
    request: Request, task_id: str, services: ServicesDep, tenant: Tenant,
    inline: Annotated[bool, Query(description="Inline image results as base64 `image_data`.")] = True,
) -> JSONResponse:
    """As `GET /api/v1/tasks/{task_id}/result/`."""
    return await tasks.task_result(request, task_id, services, tenant, inline)


def seed003_message(update: dict[str, Any]) -> dict[str, Any]:
    """Seed 003's envelope: ``{"type": "progress"|"complete"|"error", "data": {...}}``; ``status`` is the
    human message. A cancelled job ends with ``error`` (the seed has no other end)."""
    state = Status(update["status"])
    kind = {Status.SUCCESS: "complete", Status.FAILURE: "error", Status.REVOKED: "error"}.get(state, "progress")
    data: dict[str, Any] = {"task_id": update["task_id"], "state": state.value,
                            "progress": update.get("progress", 0),
                            "status": update.get("message") or STATUS_MESSAGES[state]}
    if "result" in update:
        data["result"] = update["result"]
    if state is Status.REVOKED:
        data["error"] = STATUS_MESSAGES[state]
    elif update.get("error") and state is not Status.SUCCESS:
        data["error"] = update["error"]
    return {"type": kind, "data": data}


@router.websocket("/ws/tasks/{task_id}")
async def seed_ws(ws: WebSocket, task_id: str) -> None:
    """Seed 003's WebSocket: the current state first, then every change as pushed by the workers (no
    polling), in the seed's envelope; closed (1000) after the terminal message."""
    await serve_ws(ws, task_id, seed003_message)


# --- seed 004: the document routes' aliases ---------------------------------------------------------------

# A router of their own keeps them under the documents tag; their routes join ``router`` (which app.py
# includes) as built, so its seed 003 tag is not added to them.
seed004 = APIRouter(prefix="/api", tags=["documents"], route_class=ApiRoute)


@seed004.post("/ingest/", status_code=202, response_model=DocumentAccepted, openapi_extra=INGEST_DOC,
              responses=UPLOAD_ERRORS, summary="Upload a document for ingestion (seed 004's path)")
async def seed_ingest(request: Request, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """Seed 004's `IngestView`: the same as `POST /api/v1/documents/`."""
    return await documents.ingest(request, services, tenant)


@seed004.get("/documents/{document_id}/status/", response_model=DocumentStatus,
             responses=schemas.errors(401, 404), summary="A document's status (seed 004's path)")
async def seed_document_status(document_id: str, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """Seed 004's `DocumentStatusView`: the same as `GET /api/v1/documents/{document_id}/status`."""
    return await documents.status(document_id, services, tenant)


seed004.add_api_route("/ingest", seed_ingest, methods=["POST"], include_in_schema=False, status_code=202)
seed004.add_api_route("/documents/{document_id}/status", seed_document_status, methods=["GET"],
                      include_in_schema=False)
router.routes.extend(seed004.routes)
