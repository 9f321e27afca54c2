"""A Replicate-compatible API under /v1/: the official ``replicate`` client runs aitasks jobs.

Each job type is the model ``aitasks/<type>``; a prediction is a job record like any other (the same
workers, tenants, keys and webhooks), shown in Replicate's shape. Errors answer Replicate's problem
body (``detail``, ``title``, ``status``; ``422`` with ``invalid_fields`` for bad input). See docs/replicate.md.
"""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Annotated, Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import Headers, UploadFile

from aitasks.api import replicate_views as rv
from aitasks.api import schemas, stream_slots
from aitasks.errors import pydantic_fields, summary
from aitasks.api.deps import ServicesDep, Tenant, is_admin, load_job
from aitasks.store.history import list_page
from aitasks.store.records import Filters
from aitasks.api.responses import FastJSONResponse as JSONResponse
from aitasks.api.routes.tasks import cancel_job
from aitasks.api.services import Services
from aitasks.api.routing import ApiRoute, Handler
from aitasks.api.submission import SubmitOptions, new_job_id, submit
from aitasks.api.submit_request import json_object, read_payload
from aitasks.api.views import base_url, prefer_wait_s, wait_for_end
from aitasks.errors import ApiError, FieldError, NotFound, PayloadTooLarge, ValidationFailed
from aitasks.jobs import predictions
from aitasks.jobs.artifacts import artifact_url
from aitasks.jobs.models import Job
from aitasks.processors.registry import JobType


class ReplicateRoute(ApiRoute):
    """Answers every error of these routes, the key check included, in Replicate's shape."""

    def wrap(self, handler: Handler) -> Handler:
        inner = super().wrap(handler)

        async def route(request: Request) -> Response:
            try:
                return await inner(request)
            except ApiError as exc:
                status, body = rv.problem(exc)
                return JSONResponse(body, status, headers=exc.headers)
            except RequestValidationError as exc:
                fields = pydantic_fields(list(exc.errors()))
                status, body = rv.problem(ValidationFailed(summary(fields), fields))
                return JSONResponse(body, status)

        return route


router = APIRouter(prefix="/v1", tags=["replicate"], route_class=ReplicateRoute)

ERRORS = {**schemas.errors(401, 404),
          422: {"description": "Input validation failed (Replicate's problem body, with `invalid_fields`)."}}
# A model the deployment keeps off for this key (diagnostic): the problem body names the setting.
# Also a `read` key writing (the problem body names its scope).
FORBIDDEN: dict[int | str, dict[str, Any]] = {403: {"description": "Not allowed here (Replicate's problem body)."}}
# Over the tenant's submit limits (api/flow_control.py): Replicate's problem body, with our `limit` beside.
LIMITED: dict[int | str, dict[str, Any]] = {
    429: {"description": "Over the tenant's `submits_per_s` or `max_queued`, or `max_streams` with `Prefer: wait` "
                         "(Replicate's problem body; `limit` names it).", "headers": schemas.RATE_LIMIT_HEADERS},
    507: {"description": "The tenant already stores its `max_storage_mb` (Replicate's problem body; `limit` names "
                         "it)."}}

TOO_LARGE: dict[int | str, dict[str, Any]] = {413: {
    "description": "A file over the size limit, or over the tenant's `max_storage_mb` (Replicate's problem body; "
                   "`limit`, `max_storage_mb`, `storage_used_bytes` name it): nothing was stored."}}

CREATE_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["input"],
        "properties": {
            "input": {"type": "object", "description": "The model's inputs: see its version's openapi_schema."},
            "version": {"type": "string", "description": "POST /v1/predictions only: a version id, or owner/name."},
            "model": {"type": "string", "description": "POST /v1/predictions only: owner/name."},
            "webhook": {"type": "string", "format": "uri"},
            "webhook_events_filter": {"type": "array", "items": {"enum": list(predictions.WEBHOOK_EVENTS)}},
        }}}}},
    "parameters": [{"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"},
                    "description": "`wait` or `wait=N`: answer when the prediction ends or N seconds pass."}],
}
# POST /v1/predictions names its model: a non-empty `version` or `model` (the server reads `version` first).
_NAMED = {**CREATE_BODY["requestBody"]["content"]["application/json"]["schema"]}
_NAMED["properties"] = {**_NAMED["properties"],
                        "version": {**_NAMED["properties"]["version"], "minLength": 1},
                        "model": {**_NAMED["properties"]["model"], "minLength": 1}}
_NAMED["anyOf"] = [{"required": ["version"]}, {"required": ["model"]}]
CREATE_NAMED_BODY: dict[str, Any] = {**CREATE_BODY, "requestBody": {"required": True, "content": {
    "application/json": {"schema": _NAMED}}}}


# --- models --------------------------------------------------------------------------------------


@router.get("/models", responses=schemas.errors(401), summary="List models (Replicate)")
async def list_models(request: Request, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    base = base_url(services, request)
    return JSONResponse({"next": None, "previous": None,
                         "results": [rv.model_view(jt, base) for jt in services.registry.all()]})


@router.get("/models/{owner}/{name}", responses=schemas.errors(401, 404), summary="Get a model (Replicate)")
async def get_model(owner: str, name: str, request: Request, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """The job type as a model; ``latest_version.openapi_schema`` has its Input and Output."""
    jt = rv.find_model(services, owner, name)
    return JSONResponse(rv.model_view(jt, base_url(services, request)))


@router.get("/models/{owner}/{name}/versions", responses=schemas.errors(401, 404),
            summary="List a model's versions (Replicate)")
async def list_versions(owner: str, name: str, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    jt = rv.find_model(services, owner, name)
    return JSONResponse({"next": None, "previous": None, "results": [predictions.version_view(jt)]})


@router.get("/models/{owner}/{name}/versions/{version_id}", responses=schemas.errors(401, 404),
            summary="Get a model version (Replicate)")
async def get_version(owner: str, name: str, version_id: str, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    jt = rv.find_model(services, owner, name)
    if version_id != predictions.version_id(jt):
        raise NotFound(f"Version {version_id} of {owner}/{name} not found")
    return JSONResponse(predictions.version_view(jt))


# --- predictions ---------------------------------------------------------------------------------


async def _file_upload(services: Services, tenant: str, field: str, value: Any) -> UploadFile | None:
    """A file input given as the URL of a /v1/files upload, as an upload; None for anything else."""
    if not isinstance(value, str) or value.startswith("data:"):
        return None
    if not value.startswith(("http://", "https://")):
        return None  # plain base64, as the seeds' API takes it
    file_id = rv.file_id_of(value)
    if file_id is None:
        raise rv.bad_file_url(field)
    try:
        record = await rv.load_file(services, tenant, file_id)
        data = await rv.file_bytes(services, tenant, record)
    except NotFound:
        raise ValidationFailed(f"{field}: file {file_id} not found (unknown, expired, or not yours)",
                               [FieldError(field, f"file {file_id} not found")]) from None
    return UploadFile(io.BytesIO(data), size=len(data), filename=record["name"],
                      headers=Headers({"content-type": record["content_type"]}))


def _webhook_fields(body: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {"webhook": body.get("webhook") or body.get("webhook_completed")}
    events = body.get("webhook_events_filter")
    if isinstance(events, list):
        mapped = [predictions.WEBHOOK_EVENTS.get(e, e) if isinstance(e, str) else e for e in events]
        events = list(dict.fromkeys(mapped))
    if events is not None:
        fields["webhook_events_filter"] = events
    elif body.get("webhook_completed") and not body.get("webhook"):
        fields["webhook_events_filter"] = ["completed"]
    return fields


async def _create(request: Request, services: Services, tenant: str, jt: JobType | None,
                  body: dict[str, Any]) -> JSONResponse:
    prefer = request.headers.get("prefer")
    wait_s = prefer_wait_s(prefer, float("inf"))
    if wait_s is not None:
        wait_s = min(wait_s, services.settings.max_wait_s)
    if jt is None:
        ref = body.get("version") or body.get("model")
        if not isinstance(ref, str) or not ref:
            raise ValidationFailed("version is required", [FieldError("version", "is required")])
        jt = rv.find_version(services, ref)
    flat = body.get("input", {})
    if not isinstance(flat, dict):
        raise ValidationFailed("input must be an object", [FieldError("input", "must be an object")])
    flat = dict(flat)
    priority = flat.pop("priority", None)  # aitasks' own input: the job's priority in its tenant's line
    fields = rv.seed_fields(jt, flat) | _webhook_fields(body) | ({"priority": priority} if priority else {})
    uploads: dict[str, UploadFile] = {}
    for name in jt.files:
        upload = await _file_upload(services, tenant, name, fields.get(name))
        if upload is not None:
            uploads[name] = upload
            fields.pop(name)
    job_id = new_job_id()
    options = SubmitOptions(job_id=job_id, base_url=base_url(services, request), webhook_format="replicate",
                            admin=is_admin(request))
    headers: dict[str, str] = {}
    async with stream_slots.slot(services, tenant, wanted=wait_s is not None):  # a waiting submit: max_streams
        # Subscribed before the job exists, so the prediction's logs miss no message.
        collector = await rv.start_log_collector(services, job_id, jt.limits(services.settings)["retention_s"])
        try:
            job = (await submit(services, tenant, jt.name, fields, uploads, options)).job
        except BaseException as exc:
            if not (isinstance(exc, ApiError) and exc.extra.get("task_id") == job_id):
                collector.cancel()  # no job; a maybe-accepted one keeps it (it stops once it finds no record)
            raise
        if wait_s is not None:
            final = await wait_for_end(services, tenant, job.id, wait_s)
            headers["Preference-Applied"] = f"wait={wait_s:g}"
            if final is not None:
                job = final
            else:
                job = await load_job(services, tenant, job.id)
    base = base_url(services, request)
    headers["Location"] = f"{base}/v1/predictions/{job.id}"
    view = await _view(services, job, base)
    if wait_s is not None and not job.status.is_terminal():
        # As Replicate answers a wait that ran out: the client reads any other status as final.
        view["status"] = "starting"
    return JSONResponse(view, 201, headers=headers)


async def _view(services: Services, job: Job, base: str) -> dict[str, Any]:
    history = await rv.log_history(services, [job.id])
    view = rv.prediction_view(services, job, base, history[job.id])
    if base.startswith("http:"):
        view["output"] = await _inline_output(services, job, view["output"], base)
    return view


# The replicate client wraps only https: and data: outputs in FileOutput (the object user code calls
# .read() on); over plain http (make run) it would hand back a bare URL string and break that code. So a
# single prediction served over http carries its image output as a data: URI, up to this size.
INLINE_OUTPUT_MAX_BYTES = 20 * 1024 * 1024


async def _inline_output(services: Services, job: Job, output: Any, base: str) -> Any:
    for artifact in job.artifacts:
        if output == artifact_url(base, job.id, artifact.name) and artifact.bytes <= INLINE_OUTPUT_MAX_BYTES:
            try:
                data = await asyncio.to_thread(services.artifacts.read, job.id, artifact.name)
            except FileNotFoundError:
                return output
            return f"data:{artifact.media_type};base64,{base64.b64encode(data).decode()}"
    return output


async def _json_body(request: Request) -> dict[str, Any]:
    return await json_object(request, 'send {"input": {...}}')


@router.post("/models/{owner}/{name}/predictions", status_code=201, openapi_extra=CREATE_BODY,
             responses={**ERRORS, **FORBIDDEN, **LIMITED, **TOO_LARGE, **schemas.errors(503)},
             summary="Run a model (Replicate)")
async def create_model_prediction(owner: str, name: str, request: Request, services: ServicesDep,
                                  tenant: Tenant) -> JSONResponse:
    """What ``replicate.run("aitasks/<type>", input=...)`` calls."""
    jt = rv.find_model(services, owner, name)
    return await _create(request, services, tenant, jt, await _json_body(request))


@router.post("/predictions", status_code=201, openapi_extra=CREATE_NAMED_BODY,
             responses={**ERRORS, **FORBIDDEN, **LIMITED, **TOO_LARGE, **schemas.errors(503)},
             summary="Create a prediction (Replicate)")
async def create_prediction(request: Request, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """By ``version`` (an id from the model's ``latest_version``, or ``owner/name[:id]``) or ``model``."""
    return await _create(request, services, tenant, None, await _json_body(request))


@router.get("/predictions", responses=ERRORS, summary="List predictions (Replicate)")
async def list_predictions(
    request: Request, services: ServicesDep, tenant: Tenant,
    cursor: Annotated[str | None, Query(description="From the `next` URL of the previous page.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
) -> JSONResponse:
    """Your predictions (every job of yours, whichever API submitted it), newest first: live ones from Redis
    and ended ones from the store of record."""
    try:
        page = await list_page(services.redis, services.settings.resolved_database_url, tenant, limit, cursor,
                               Filters())
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("cursor is not valid", [FieldError("cursor", "is not a cursor this API gave")]) from None
    base = base_url(services, request)
    history = await rv.log_history(services, [j.id for j in page.jobs])
    next_url = None
    if page.next_cursor:
        next_url = f"{base}/v1/predictions?cursor={quote(page.next_cursor, safe='')}"
        if limit != 100:
            next_url += f"&limit={limit}"
    return JSONResponse({"next": next_url, "previous": None,
                         "results": [rv.prediction_view(services, j, base, history[j.id]) for j in page.jobs]})


@router.get("/predictions/{prediction_id}", responses=ERRORS, summary="Get a prediction (Replicate)")
async def get_prediction(prediction_id: str, request: Request, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    job = await load_job(services, tenant, prediction_id)
    return JSONResponse(await _view(services, job, base_url(services, request)))


@router.post("/predictions/{prediction_id}/cancel", responses={**ERRORS, **FORBIDDEN}, summary="Cancel a prediction (Replicate)")
async def cancel_prediction(prediction_id: str, request: Request, services: ServicesDep,
                            tenant: Tenant) -> JSONResponse:
    """Cancels as ``POST /api/v1/tasks/{id}/cancel/`` does; a finished prediction is answered as it is."""
    await cancel_job(services, await load_job(services, tenant, prediction_id))
    job = await load_job(services, tenant, prediction_id)
    return JSONResponse(await _view(services, job, base_url(services, request)))


# --- files ---------------------------------------------------------------------------------------


@router.post("/files", status_code=201, responses={**ERRORS, **FORBIDDEN, **TOO_LARGE},
             openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {
                 "encoding": {"metadata": {"contentType": "application/json"}}, "schema": {
                     "type": "object", "required": ["content"],
                     "properties": {"content": {"type": "string", "format": "binary"},
                                    "metadata": {"type": "object", "description": "A JSON object, as a part of its "
                                                                                  "own."}}}}}}},
             summary="Upload a file (Replicate)")
async def create_file(request: Request, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """A file for a later prediction's input: send its ``urls.get``. Kept for the retention time, in the
    artifact store (Redis keeps only its record)."""
    fields, uploads = await read_payload(request)
    upload = uploads.get("content") or next(iter(uploads.values()), None)
    if upload is None:
        raise ValidationFailed("content is required: a multipart file part",
                               [FieldError("content", "is required (a file part)")])
    data = await upload.read()
    limit = services.settings.max_upload_bytes
    if len(data) > limit:
        raise PayloadTooLarge(f"content is {len(data)} bytes, over the limit of {limit}",
                              [FieldError("content", f"over the limit of {limit} bytes")])
    metadata: Any = fields.get("metadata") or {}
    if isinstance(metadata, str):
        try:
            metadata = orjson.loads(metadata)
        except orjson.JSONDecodeError:
            metadata = None
    if not isinstance(metadata, dict):
        raise ValidationFailed("metadata must be a JSON object", [FieldError("metadata", "must be a JSON object")])
    content_type = upload.content_type or "application/octet-stream"
    record = await rv.save_file(services, tenant, upload.filename or "file", content_type, data, metadata,
                                services.settings.retention_s)
    return JSONResponse(rv.file_view(record, base_url(services, request)), 201)


@router.get("/files", responses=ERRORS, summary="List your files (Replicate)")
async def list_files(request: Request, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    base = base_url(services, request)
    records = await rv.list_files(services, tenant)
    return JSONResponse({"next": None, "previous": None, "results": [rv.file_view(r, base) for r in records]})


@router.get("/files/{file_id}", responses=ERRORS, summary="Get a file's details (Replicate)")
async def get_file(file_id: str, request: Request, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    record = await rv.load_file(services, tenant, file_id)
    return JSONResponse(rv.file_view(record, base_url(services, request)))


@router.get("/files/{file_id}/download", responses={200: {"content": {"application/octet-stream": {}}}, **ERRORS},
            summary="Download a file (Replicate)")
async def download_file(file_id: str, services: ServicesDep, tenant: Tenant) -> Response:
    record = await rv.load_file(services, tenant, file_id)
    data = await rv.file_bytes(services, tenant, record)
    name = quote(record["name"])
    return Response(data, media_type=record["content_type"],
                    headers={"Content-Disposition": f"attachment; filename*=UTF-8''{name}"})


@router.delete("/files/{file_id}", status_code=204, responses={**ERRORS, **FORBIDDEN}, summary="Delete a file (Replicate)")
async def delete_file(file_id: str, services: ServicesDep, tenant: Tenant) -> Response:
    await rv.delete_file(services, tenant, file_id)
    return Response(status_code=204)
