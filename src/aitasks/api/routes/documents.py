"""Documents: upload for ingestion, status, list, delete, batches, and semantic search (seed 004).

An upload is checked cheaply (api/document_upload.py): a bad file answers 4xx at once, a good one gets a
record (documents/records.py) and a ``document_ingestion`` job, and ``202`` before any text is read.
Search embeds the query here with the workers' model, loaded on the first search and run in a thread
so the event loop never waits on torch. Seed 004's own paths are aliases in routes/compat.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import anyio.to_thread
import sqlalchemy as sa
from fastapi import APIRouter, Query, Request

from aitasks.api import flow_control, schemas
from aitasks.api.deps import ServicesDep, Tenant
from aitasks.api.document_schemas import (
    ACCEPTED_MESSAGE,
    BATCH_DOC,
    INGEST_DOC,
    UPLOAD_ERRORS,
    BatchAccepted,
    BatchStatus,
    DocumentAccepted,
    DocumentDeleted,
    DocumentList,
    DocumentStatus,
    SearchRequest,
    SearchResponse,
)
from aitasks.api.document_upload import Prepared, parse_metadata, prepare, read_form
from aitasks.api.document_views import batch_view, view, views
from aitasks.api.responses import FastJSONResponse as JSONResponse
from aitasks.api.routes.tasks import request_cancel
from aitasks.api.routing import ApiRoute
from aitasks.api.services import Services
from aitasks.api.submission import PreparedFile, SubmitOptions, new_job_id, read_priority, submit
from aitasks.documents import service
from aitasks.documents.errors import InvalidStoreArgument
from aitasks.documents.records import DocumentRecords, Record, Upload
from aitasks.errors import FieldError, NotFound, ServiceUnavailable, ValidationFailed
from aitasks.jobs.models import Job
from aitasks.processors.documents.ingestion import NAME as JOB_TYPE
from aitasks.processors.registry import JobType
from aitasks.store import document_rows
from aitasks.store import engine as engines

if TYPE_CHECKING:
    from aitasks.settings import Settings

router = APIRouter(tags=["documents"], route_class=ApiRoute)
V1 = "/api/v1/documents"


async def _record(records: DocumentRecords, tenant: str, document_id: str, services: Services) -> Record:
    record = await records.read(tenant, document_id)
    if record is None and await services.documents_refilled():  # Redis had lost its data: filled from SQL
        record = await records.read(tenant, document_id)
    if record is None:
        raise NotFound(f"No document with id {document_id!r} (unknown, deleted, or not yours)")
    return record


# --- upload ------------------------------------------------------------------------------------------


def _ingestion_type(services: Services) -> JobType:
    jt = services.registry.get(JOB_TYPE)
    if jt is None:
        raise ServiceUnavailable(f"the {JOB_TYPE} job type is not installed")
    return jt


async def submit_ingestion(services: Services, tenant: str, doc: Prepared, job_id: str, record_key: str,
                           priority: str = "normal") -> Job:
    """The document's ``document_ingestion`` job, through the one submit service: the file is already
    checked, the job id already in the record, and the job names the record for its atomic end."""
    media_type, ext = doc.media
    fields = {"document_id": doc.document_id, "filename": doc.filename, "content_type": doc.content_type,
              "metadata": doc.metadata, "priority": priority}
    upload = PreparedFile(doc.data, media_type, ext, doc.filename)
    options = SubmitOptions(job_id=job_id, document=record_key, internal=True, counted=True)  # by its upload
    return (await submit(services, tenant, JOB_TYPE, fields, {"file": upload}, options)).job


async def _start(services: Services, tenant: str, doc: Prepared, batch_id: str | None = None,
                 priority: str = "normal") -> Job:
    """Write the document's record, then accept its job (which names the record)."""
    _ingestion_type(services)  # before the record: no record for a job that cannot exist
    records = DocumentRecords(services.redis)
    job_id = new_job_id()
    previous = await records.create(tenant, Upload(doc.document_id, job_id, doc.filename, doc.content_type,
                                                   len(doc.data), doc.metadata, batch_id))
    old_task = previous.get("task_id")
    if old_task and previous.get("status") == "processing":
        # The earlier upload's job no longer owns the record: stop it rather than let it write stale chunks.
        old = await services.store.get(old_task)
        if old is not None:
            await request_cancel(services, old)
    try:
        return await submit_ingestion(services, tenant, doc, job_id, records.key(tenant, doc.document_id), priority)
    except BaseException as exc:
        await records.mark_failed(tenant, doc.document_id, f"The job could not be queued: {exc}", type(exc).__name__)
        raise


async def ingest(request: Request, services: Services, tenant: str) -> JSONResponse:
    """One file: `POST /api/v1/documents/` and seed 004's `POST /api/ingest/`."""
    fields, files = await read_form(request, 1)
    if len(files) > 1:
        raise ValidationFailed("send one file here; POST /api/v1/documents/batch takes many",
                               [FieldError("file", "one file per request on this path")])
    priority = read_priority({"priority": fields.get("priority")})  # 400 before any record is written
    await flow_control.take(services, tenant)  # the tenant's submit limits (429), before the file is checked
    doc = await prepare(services, files[0], fields.get("document_id"), parse_metadata(fields.get("metadata")))
    job = await _start(services, tenant, doc, priority=priority)
    status_url = f"{V1}/{doc.document_id}/status"
    return JSONResponse({"message": ACCEPTED_MESSAGE, "task_id": job.id, "document_id": doc.document_id,
                         "status": "processing", "status_url": status_url}, 202, headers={"Location": status_url})


@router.post(f"{V1}/", status_code=202, response_model=DocumentAccepted, openapi_extra=INGEST_DOC,
             responses=UPLOAD_ERRORS, summary="Upload a document for ingestion")
async def upload_document(request: Request, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """Checks the file cheaply (type, encryption, zip bomb, page count, size) and answers `202` at once;
    a worker then extracts its text (OCR for scanned pages), chunks, embeds and stores it. Follow it at
    `status_url`. A file refused here never becomes a job; one that fails later ends `failed` with the reason."""
    return await ingest(request, services, tenant)


@router.post(f"{V1}/batch", status_code=202, response_model=BatchAccepted, openapi_extra=BATCH_DOC,
             responses=UPLOAD_ERRORS, summary="Upload many documents as one batch")
async def upload_batch(request: Request, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """Seed 004's `batch_process_documents`: one `document_ingestion` job per file, run in parallel by the
    workers, under one `batch_id`. Every file is checked first: one refused file refuses the batch (the
    error names it, e.g. `file[2]`) and nothing is started."""
    fields, files = await read_form(request, services.settings.max_batch_files)
    if "document_id" in fields:
        raise ValidationFailed("document_id is not taken by a batch (each document gets its own)",
                               [FieldError("document_id", "is not taken by a batch")])
    metadata = parse_metadata(fields.get("metadata"))
    priority = read_priority({"priority": fields.get("priority")})
    await flow_control.take(services, tenant, len(files))  # each file is a submit (429: none is started)
    docs = [await prepare(services, f, None, metadata, f"file[{i}]") for i, f in enumerate(files)]
    batch_id = await DocumentRecords(services.redis).create_batch(tenant, [d.document_id for d in docs])
    started = [await _start(services, tenant, d, batch_id, priority) for d in docs]
    status_url = f"{V1}/batches/{batch_id}"
    return JSONResponse({
        "message": ACCEPTED_MESSAGE, "batch_id": batch_id, "status": "processing", "status_url": status_url,
        "documents": [{"document_id": d.document_id, "task_id": j.id, "filename": d.filename, "status": "processing"}
                      for d, j in zip(docs, started, strict=True)]}, 202, headers={"Location": status_url})


@router.get(f"{V1}/batches/{{batch_id}}", response_model=BatchStatus, responses=schemas.errors(401, 404),
            summary="A batch's status")
async def batch_status(batch_id: str, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """Sums up the batch's documents from their records (which outlive the jobs)."""
    records = DocumentRecords(services.redis)
    batch = await records.read_batch(tenant, batch_id)
    if batch is None:
        raise NotFound(f"No batch with id {batch_id!r} (unknown, expired, or not yours)")
    return JSONResponse(await batch_view(records, tenant, batch))


# --- status, list, delete ---------------------------------------------------------------------------------


async def status(document_id: str, services: Services, tenant: str) -> JSONResponse:
    """A document's status: here and at seed 004's `GET /api/documents/{document_id}/status/`."""
    record = await _record(DocumentRecords(services.redis), tenant, document_id, services)
    job = await services.store.get(record["task_id"]) if record.get("task_id") else None
    return JSONResponse(view(record, job))


@router.get(f"{V1}/{{document_id}}/status", response_model=DocumentStatus, responses=schemas.errors(401, 404),
            summary="A document's status")
async def document_status(document_id: str, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """`processing` (with the job's `progress` and `stage`: extract, ocr, chunk, embed, store), `completed`
    (with `pages`, `chunks`, `ocr_pages`) or `failed` (with `error`). Kept after the job record expires."""
    return await status(document_id, services, tenant)


router.add_api_route(V1 + "/{document_id}/status/", document_status, methods=["GET"], include_in_schema=False)


@router.get(f"{V1}/", response_model=DocumentList, responses=schemas.errors(400, 401), summary="List your documents")
async def list_documents(
    services: ServicesDep, tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> JSONResponse:
    """The caller's documents, most recently uploaded first, with cursor pagination."""
    records = DocumentRecords(services.redis)
    await services.documents_refilled()  # one EXISTS, unless Redis lost its data: then filled from SQL first
    try:
        page = await records.page(tenant, limit, cursor)
    except ValueError:  # UnicodeDecodeError and binascii.Error among them
        raise ValidationFailed("cursor is not valid", [FieldError("cursor", "is not a cursor this API gave")]) from None
    return JSONResponse({"documents": await views(records, page.items), "next_cursor": page.next_cursor})


@router.delete(f"{V1}/{{document_id}}", response_model=DocumentDeleted, responses=schemas.errors(401, 403, 404, 503),
               summary="Delete a document and its vectors")
async def delete_document(document_id: str, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """Removes every chunk and vector of the document from the store, then its record. A running
    ingestion of it is cancelled (it would not store its chunks: the record no longer names it)."""
    records = DocumentRecords(services.redis)
    record = await _record(records, tenant, document_id, services)
    # First the record lets go of its job (the job checks it before storing; the UPDATE script skips it)...
    await records.mark_deleting(tenant, document_id)
    if record.get("task_id"):
        job = await services.store.get(record["task_id"])
        if job is not None and not job.status.is_terminal():
            await request_cancel(services, job)
    # ...then the vectors go; a store failure leaves the record 'deleting' and DELETE can be repeated.
    settings = services.settings
    try:
        removed = await anyio.to_thread.run_sync(
            lambda: service.store(settings).delete_document(tenant, document_id))
    except Exception as exc:
        raise ServiceUnavailable(f"The vector store did not delete the document's chunks ({type(exc).__name__}); "
                                 "try again.") from exc
    try:  # out of the store of record too, or a Redis refilled from it would bring the document back
        await anyio.to_thread.run_sync(
            lambda: document_rows.delete(engines.shared(settings.resolved_database_url), tenant, document_id))
    except sa.exc.SQLAlchemyError as exc:
        raise ServiceUnavailable("The store of record did not delete the document's record; try again.") from exc
    await records.delete(tenant, document_id)
    if record.get("task_id"):  # its uploaded file (its job's input) goes too: its bytes leave max_storage_mb
        await anyio.to_thread.run_sync(services.artifacts.delete_job, record["task_id"])
    return JSONResponse({"document_id": document_id, "deleted": True, "chunks_deleted": removed})


# --- search -------------------------------------------------------------------------------------------------


def _search(settings: Settings, tenant: str, req: SearchRequest) -> list[dict[str, object]]:
    model = service.embedder(settings)  # loaded on the first search of this process, then kept
    vector = model.encode_query(req.query)
    hits = service.store(settings).search(tenant, vector, req.query, req.top_k, req.document_ids, req.filters,
                                          alpha=req.alpha)
    return [h.to_dict() for h in hits]


@router.post("/api/v1/search", response_model=SearchResponse, responses=schemas.errors(400, 401, 503),
             summary="Search your documents")
async def search(req: SearchRequest, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """The chunks that best answer `query`, best first, from the caller's documents only. Hybrid: the
    query's embedding (the workers' model) finds paraphrases, a keyword score (BM25) lifts exact names."""
    try:
        results = await anyio.to_thread.run_sync(_search, services.settings, tenant, req)
    except InvalidStoreArgument as exc:
        text = str(exc)
        field = ("document_ids" if "document id" in text.lower() else
                 "filters" if "metadata" in text.lower() or "filter" in text.lower() else "query")
        raise ValidationFailed(text, [FieldError(field, text)]) from None
    return JSONResponse({"results": results})


router.add_api_route(V1, upload_document, methods=["POST"], include_in_schema=False, status_code=202)
router.add_api_route(V1, list_documents, methods=["GET"], include_in_schema=False)
