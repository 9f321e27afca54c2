"""Documents: upload for ingestion, status, list, delete, batches, and semantic search (seed 004).

An upload is checked cheaply here (type, encryption, zip bomb, page count: milliseconds) so a bad file
answers 4xx at once; a good one gets a document record and a ``document_ingestion`` job, and the answer
is ``202`` before any text is read. The record (``keys.document``) has no TTL: it outlives the job's
retention, and the UPDATE script marks it completed or failed in the same step that ends the job,
whoever ends it. Search embeds the query in this process with the workers' model, loaded on the first
search and run in a thread so the event loop never waits on torch.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Annotated, Any

import anyio.to_thread
import orjson
from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from aitasks.api import schemas
from aitasks.api.document_schemas import (
    ACCEPTED_MESSAGE,
    BatchAccepted,
    BatchStatus,
    DocumentAccepted,
    DocumentDeleted,
    DocumentList,
    DocumentStatus,
    SearchRequest,
    SearchResponse,
)
from aitasks.api.deps import ServicesDep, Tenant, current_tenant, get_services_now
from aitasks.api.responses import FastJSONResponse as JSONResponse
from aitasks.api.routes.tasks import request_cancel
from aitasks.api.services import Services
from aitasks.api.submission import Submission, accept, new_job_id
from aitasks.documents import service
from aitasks.documents.errors import DocumentError, InvalidStoreArgument
from aitasks.errors import ApiError, FieldError, NotFound, PayloadTooLarge, ServiceUnavailable, ValidationFailed
from aitasks.jobs import keys
from aitasks.jobs.files import CheckedFile
from aitasks.jobs.models import Job, Status, iso
from aitasks.jobs.store import decode_cursor, encode_cursor
from aitasks.processors.documents.ingestion import NAME as JOB_TYPE
from aitasks.processors.documents.ingestion import STAGE_RANGES

if TYPE_CHECKING:
    from aitasks.documents.extract import DocType
    from aitasks.settings import Settings

router = APIRouter(tags=["documents"])
V1 = "/api/v1/documents"
LOST_AFTER_S = 60.0  # a record 'processing' whose job record is gone this long after upload: the job was lost

_MEDIA = {"pdf": ("application/pdf", "pdf"),
          "docx": ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
          "text": ("text/plain", "txt"), "markdown": ("text/markdown", "md"), "html": ("text/html", "html"),
          "png": ("image/png", "png"), "jpeg": ("image/jpeg", "jpg")}


# --- helpers ------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(raw: dict[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def document_error(exc: DocumentError, field: str = "file") -> ApiError:
    """A DocumentError seen at upload, as an API answer naming the field (415, 413 or 422)."""
    err = ApiError(str(exc), [FieldError(field, str(exc))])
    err.status, err.code = exc.status, exc.code
    return err


def view(record: dict[str, str], job: Job | None = None, now: float | None = None) -> dict[str, Any]:
    """A document record as clients see it, with the job's live progress while it runs."""
    status = record.get("status", "processing")
    out: dict[str, Any] = {
        "document_id": record.get("document_id"), "status": status,
        "pages": None, "chunks": None, "ocr_pages": None, "error": record.get("error") or None,
        "error_type": record.get("error_type") or None,
        "filename": record.get("filename") or None, "content_type": record.get("content_type") or None,
        "bytes": _int(record.get("bytes")), "metadata": orjson.loads(record.get("metadata") or "{}"),
        "task_id": record.get("task_id") or None, "batch_id": record.get("batch_id") or None,
        "created_at": iso(_float(record.get("created_at"))), "uploaded_at": iso(_float(record.get("uploaded_at"))),
        "finished_at": iso(_float(record.get("finished_at"))),
    }
    if status == "completed":
        out.update(pages=_int(record.get("pages")), chunks=_int(record.get("chunks")),
                   ocr_pages=_int(record.get("ocr_pages")), doc_type=record.get("doc_type") or None)
    if status == "processing":
        uploaded = _float(record.get("uploaded_at")) or 0.0
        if job is None and (now or time.time()) - uploaded > LOST_AFTER_S:
            # The UPDATE script marks the record when the job ends; a job record gone while the record
            # still says processing never ended: it expired in the queue, or its upload was interrupted.
            out.update(status="failed", error_type="JobLost",
                       error="The ingestion job is gone (it expired before a worker ran it); upload the "
                             "document again.")
        elif job is not None:
            stage = job.message.split(" ", 1)[0] if job.message else ""
            out.update(progress=job.progress, message=job.message,
                       stage=stage if stage in STAGE_RANGES else None)
            if job.status is Status.PENDING:
                out["stage"] = "queued"
    return out


async def _jobs(services: Services, task_ids: list[str | None]) -> list[Job | None]:
    pipe = services.redis.pipeline(transaction=False)
    wanted = [t for t in task_ids if t]
    for task_id in wanted:
        pipe.hgetall(keys.job(task_id))
    found = dict(zip(wanted, await pipe.execute() if wanted else [], strict=True))
    return [Job.from_hash(found[t]) if t and found.get(t) else None for t in task_ids]


async def _records(services: Services, tenant: str, document_ids: list[str]) -> list[dict[str, str] | None]:
    pipe = services.redis.pipeline(transaction=False)
    for document_id in document_ids:
        pipe.hgetall(keys.document(tenant, document_id))
    return [_decode(raw) if raw else None for raw in await pipe.execute()]


async def _views(services: Services, records: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Views of many records; the job records are read only for those still processing."""
    jobs = await _jobs(services, [r.get("task_id") if r.get("status") == "processing" else None for r in records])
    now = time.time()
    return [view(r, j, now) for r, j in zip(records, jobs, strict=True)]


async def _record(services: Services, tenant: str, document_id: str) -> dict[str, str]:
    raw = await services.redis.hgetall(keys.document(tenant, document_id)) if len(document_id) <= 128 else None
    if not raw:
        raise NotFound(f"No document with id {document_id!r} (unknown, deleted, or not yours)")
    return _decode(raw)


# --- upload ------------------------------------------------------------------------------------------


@dataclass
class Prepared:
    document_id: str
    filename: str | None
    content_type: str | None
    data: bytes
    metadata: dict[str, Any]
    doc_type: DocType


async def _form(request: Request, max_files: int) -> tuple[dict[str, str], list[UploadFile]]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        raise ValidationFailed("send multipart/form-data with the document in the part `file`",
                               [FieldError("file", "is required (a multipart file part)")])
    try:
        form = await request.form(max_files=max_files + 1, max_fields=50)
    except HTTPException as exc:
        if exc.status_code != 400:
            raise
        raise ValidationFailed(f"request body is not valid multipart/form-data ({exc.detail})",
                               [FieldError("body", "is not valid multipart/form-data")]) from None
    fields: dict[str, str] = {}
    files: list[UploadFile] = []
    for name, value in form.multi_items():
        if isinstance(value, UploadFile):
            if name != "file":
                raise ValidationFailed(f"{name} is not a file field: send documents in the part `file`",
                                       [FieldError(name, "is not a known file field (use `file`)")])
            files.append(value)
        elif name in ("document_id", "metadata"):
            fields[name] = value
        elif name == "file":
            raise ValidationFailed("file must be a file part, not a text field",
                                   [FieldError("file", "must be a multipart file part")])
        else:
            raise ValidationFailed(f"{name} is not a known field", [FieldError(name, "is not a known field")])
    if not files:
        raise ValidationFailed("file is required", [FieldError("file", "is required (a multipart file part)")])
    if len(files) > max_files:
        raise ValidationFailed(f"at most {max_files} files per request",
                               [FieldError("file", f"at most {max_files} files per request")])
    return fields, files


def _metadata(raw: str | None) -> dict[str, Any]:
    if raw is None or not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValidationFailed("metadata is not valid JSON", [FieldError("metadata", "must be a JSON object")]) from None
    if not isinstance(value, dict):
        raise ValidationFailed("metadata must be a JSON object", [FieldError("metadata", "must be a JSON object")])
    return value


def _check(data: bytes, filename: str | None, content_type: str | None, document_id: str,
           metadata: dict[str, Any], settings: Settings, field: str) -> DocType:
    """The cheap checks, in a thread: the id, the metadata, then the file (type, PDF, zip bomb, pages)."""
    from aitasks.documents.extract import check_upload
    from aitasks.documents.store import check_document_id, check_metadata

    try:
        check_document_id(document_id)
    except InvalidStoreArgument as exc:
        raise ValidationFailed(str(exc), [FieldError("document_id", str(exc))]) from None
    try:
        check_metadata(metadata)
    except InvalidStoreArgument as exc:
        raise ValidationFailed(str(exc), [FieldError("metadata", str(exc))]) from None
    try:
        return check_upload(data, filename, content_type, service.limits(settings))
    except DocumentError as exc:
        raise document_error(exc, field) from None


async def _prepare(services: Services, upload: UploadFile, document_id: str | None, metadata: dict[str, Any],
                   field: str = "file") -> Prepared:
    settings = services.settings
    data = await upload.read()
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(f"{field} is {len(data)} bytes, over the limit of {settings.max_upload_bytes}",
                              [FieldError(field, f"over the limit of {settings.max_upload_bytes} bytes")])
    name = PurePosixPath((upload.filename or "").replace("\\", "/")).name[-255:] or None
    content_type = upload.content_type or None
    doc_id = document_id if document_id is not None else uuid.uuid4().hex
    doc_type = await anyio.to_thread.run_sync(_check, data, name, content_type, doc_id, metadata, settings, field)
    return Prepared(doc_id, name, content_type, data, metadata, doc_type)


async def _start(services: Services, tenant: str, doc: Prepared, batch_id: str | None = None) -> Job:
    """Write the document's record, then accept its job (which names the record)."""
    jt = services.registry.get(JOB_TYPE)
    if jt is None:
        raise ServiceUnavailable(f"the {JOB_TYPE} job type is not installed")
    job_id = new_job_id()
    key = keys.document(tenant, doc.document_id)
    now = time.time()
    previous = _decode(await services.redis.hgetall(key))
    media_type, ext = _MEDIA[doc.doc_type.value]
    artifact = f"input-file.{ext}"
    raw = {"file": {"artifact": artifact, "media_type": media_type, "bytes": len(doc.data), "filename": doc.filename},
           "document_id": doc.document_id, "filename": doc.filename, "content_type": doc.content_type,
           "metadata": doc.metadata}
    data = jt.input_model.model_validate(raw)
    sub = Submission(jt, data, {"file": (artifact, CheckedFile(doc.data, media_type, ext))},
                     data.model_dump(mode="json", exclude_none=True))
    record: dict[str, Any] = {"document_id": doc.document_id, "tenant": tenant, "status": "processing",
              "filename": doc.filename or "", "content_type": doc.content_type or "", "bytes": str(len(doc.data)),
              "metadata": orjson.dumps(doc.metadata).decode(), "task_id": job_id, "batch_id": batch_id or "",
              "created_at": previous.get("created_at") or repr(now), "uploaded_at": repr(now),
              "updated_at": repr(now)}
    pipe = services.redis.pipeline(transaction=True)
    pipe.delete(key)  # a re-upload starts a clean record (no numbers or error of the last run)
    pipe.hset(key, mapping=record)  # type: ignore[arg-type]
    pipe.zadd(keys.tenant_documents(tenant), {doc.document_id: int(now * 1000)})
    await pipe.execute()
    old_task = previous.get("task_id")
    if old_task and previous.get("status") == "processing":
        # The earlier upload's job no longer owns the record: stop it rather than let it write stale chunks.
        old = await services.store.get(old_task)
        if old is not None:
            await request_cancel(services, old)
    try:
        accepted = await accept(services, tenant, sub, job_id, None, document=key)
    except BaseException as exc:
        await services.redis.hset(key, mapping={"status": "failed", "error": f"The job could not be queued: {exc}",
                                                "error_type": type(exc).__name__, "updated_at": repr(time.time())})
        raise
    return accepted.job


INGEST_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": "PDF, DOCX, TXT, Markdown, HTML, or a PNG/JPEG scan."},
            "document_id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$",
                            "description": "Your id for it (default: a new one). The same id again replaces "
                                           "the document's chunks and record."},
            "metadata": {"type": "string", "description": "A flat JSON object (string, number or boolean values) "
                                                          "that search `filters` match."},
        }}}}},
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    **schemas.errors(400, 401, 413),
    415: {"model": schemas.ErrorBody, "description": "Not a supported type, or the extension and the content "
                                                     "disagree (`unsupported_document`, `type_mismatch`)."},
    422: {"model": schemas.ErrorBody, "description": "The file cannot be read: `encrypted_document`, "
                                                     "`corrupt_document`, `empty_document`."},
    503: schemas.ERRORS[503],
}


async def _ingest(request: Request) -> JSONResponse:
    services = get_services_now(request)
    tenant = await current_tenant(request)
    fields, files = await _form(request, 1)
    if len(files) > 1:
        raise ValidationFailed("send one file here; POST /api/v1/documents/batch takes many",
                               [FieldError("file", "one file per request on this path")])
    doc = await _prepare(services, files[0], fields.get("document_id"), _metadata(fields.get("metadata")))
    job = await _start(services, tenant, doc)
    status_url = f"{V1}/{doc.document_id}/status"
    return JSONResponse({"message": ACCEPTED_MESSAGE, "task_id": job.id, "document_id": doc.document_id,
                         "status": "processing", "status_url": status_url}, 202, headers={"Location": status_url})


@router.post(f"{V1}/", status_code=202, response_model=DocumentAccepted, openapi_extra=INGEST_DOC,
             responses=UPLOAD_ERRORS, summary="Upload a document for ingestion")
async def upload_document(request: Request) -> JSONResponse:
    """Checks the file cheaply (type, encryption, zip bomb, page count, size) and answers `202` at once;
    a worker then extracts its text (OCR for scanned pages), chunks, embeds and stores it. Follow it at
    `status_url`. A file refused here never becomes a job; one that fails later ends `failed` with the reason."""
    return await _ingest(request)


@router.post("/api/ingest/", status_code=202, response_model=DocumentAccepted, openapi_extra=INGEST_DOC,
             responses=UPLOAD_ERRORS, summary="Upload a document for ingestion (seed 004's path)")
async def seed_ingest(request: Request) -> JSONResponse:
    """Seed 004's `IngestView`: the same as `POST /api/v1/documents/`."""
    return await _ingest(request)


BATCH_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file"],
        "properties": {
            "file": {"type": "array", "items": {"type": "string", "format": "binary"},
                     "description": "Several parts named `file`, one per document (at most AITASKS_MAX_BATCH_FILES; "
                                    "all together within AITASKS_MAX_UPLOAD_BYTES)."},
            "metadata": {"type": "string", "description": "A flat JSON object given to every document."},
        }}}}},
}


@router.post(f"{V1}/batch", status_code=202, response_model=BatchAccepted, openapi_extra=BATCH_DOC,
             responses=UPLOAD_ERRORS, summary="Upload many documents as one batch")
async def upload_batch(request: Request) -> JSONResponse:
    """Seed 004's `batch_process_documents`: one `document_ingestion` job per file, run in parallel by the
    workers, under one `batch_id`. Every file is checked first: one refused file refuses the batch (the
    error names it, e.g. `file[2]`) and nothing is started."""
    services = get_services_now(request)
    tenant = await current_tenant(request)
    fields, files = await _form(request, services.settings.max_batch_files)
    if "document_id" in fields:
        raise ValidationFailed("document_id is not taken by a batch (each document gets its own)",
                               [FieldError("document_id", "is not taken by a batch")])
    metadata = _metadata(fields.get("metadata"))
    docs = [await _prepare(services, f, None, metadata, f"file[{i}]") for i, f in enumerate(files)]
    batch_id = uuid.uuid4().hex
    bkey = keys.document_batch(tenant, batch_id)
    await services.redis.hset(bkey, mapping={"batch_id": batch_id, "created_at": repr(time.time()),
                                             "documents": orjson.dumps([d.document_id for d in docs]).decode()})
    await services.redis.expire(bkey, keys.DOCUMENT_BATCH_TTL_S)
    started = [await _start(services, tenant, d, batch_id) for d in docs]
    status_url = f"{V1}/batches/{batch_id}"
    return JSONResponse({
        "message": ACCEPTED_MESSAGE, "batch_id": batch_id, "status": "processing", "status_url": status_url,
        "documents": [{"document_id": d.document_id, "task_id": j.id, "filename": d.filename, "status": "processing"}
                      for d, j in zip(docs, started, strict=True)]}, 202, headers={"Location": status_url})


@router.get(f"{V1}/batches/{{batch_id}}", response_model=BatchStatus, responses=schemas.errors(401, 404),
            summary="A batch's status")
async def batch_status(batch_id: str, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """Sums up the batch's documents from their records (which outlive the jobs)."""
    raw = await services.redis.hgetall(keys.document_batch(tenant, batch_id)) if len(batch_id) <= 64 else None
    if not raw:
        raise NotFound(f"No batch with id {batch_id!r} (unknown, expired, or not yours)")
    batch = _decode(raw)
    ids: list[str] = orjson.loads(batch.get("documents") or "[]")
    records = await _records(services, tenant, ids)
    # A document uploaded again outside the batch no longer belongs to it.
    present = [r for r in records if r is not None and r.get("batch_id") == batch_id]
    views = await _views(services, present)
    by_id = {v["document_id"]: v for v in views}
    documents = [by_id.get(d) or {"document_id": d, "status": "deleted"} for d in ids]
    counts = {s: sum(1 for v in documents if v["status"] == s) for s in ("processing", "completed", "failed", "deleted")}
    if counts["processing"]:
        status = "processing"
    elif counts["completed"] == len(ids):
        status = "completed"
    elif counts["completed"] == 0:
        status = "failed"
    else:
        status = "completed_with_errors"
    return JSONResponse({"batch_id": batch_id, "status": status, "total": len(ids), **counts,
                         "created_at": iso(_float(batch.get("created_at"))), "documents": documents})


# --- status, list, delete ---------------------------------------------------------------------------------


async def _status(document_id: str, services: Services, tenant: str) -> JSONResponse:
    record = await _record(services, tenant, document_id)
    job = await services.store.get(record["task_id"]) if record.get("task_id") else None
    return JSONResponse(view(record, job))


@router.get(f"{V1}/{{document_id}}/status", response_model=DocumentStatus, responses=schemas.errors(401, 404),
            summary="A document's status")
async def document_status(document_id: str, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """`processing` (with the job's `progress` and `stage`: extract, ocr, chunk, embed, store), `completed`
    (with `pages`, `chunks`, `ocr_pages`) or `failed` (with `error`). Kept after the job record expires."""
    return await _status(document_id, services, tenant)


@router.get("/api/documents/{document_id}/status/", response_model=DocumentStatus,
            responses=schemas.errors(401, 404), summary="A document's status (seed 004's path)")
async def seed_document_status(document_id: str, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """Seed 004's `DocumentStatusView`: the same as `GET /api/v1/documents/{document_id}/status`."""
    return await _status(document_id, services, tenant)


router.add_api_route("/api/documents/{document_id}/status", seed_document_status, methods=["GET"],
                     include_in_schema=False)
router.add_api_route(V1 + "/{document_id}/status/", document_status, methods=["GET"], include_in_schema=False)


@router.get(f"{V1}/", response_model=DocumentList, responses=schemas.errors(400, 401), summary="List your documents")
async def list_documents(
    services: ServicesDep, tenant: Tenant,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page.")] = None,
) -> JSONResponse:
    """The caller's documents, most recently uploaded first, with cursor pagination."""
    index = keys.tenant_documents(tenant)
    try:
        after = decode_cursor(cursor) if cursor else None
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed("cursor is not valid", [FieldError("cursor", "is not a cursor this API gave")]) from None
    max_score = f"{after[0]:.0f}" if after else "+inf"
    rows: list[tuple[str, float]] = []
    offset = 0
    while len(rows) <= limit:
        batch = await services.redis.zrevrangebyscore(index, max_score, "-inf", start=offset, num=limit + 1,
                                                      withscores=True)
        if not batch:
            break
        offset += len(batch)
        for row in batch:
            m, score = _text(row[0]), float(row[1])
            if after is None or score < after[0] or m < after[1]:
                rows.append((m, float(score)))
    page, more = rows[:limit], len(rows) > limit
    records = await _records(services, tenant, [m for m, _ in page])
    gone = [m for (m, _), r in zip(page, records, strict=True) if r is None]
    if gone:
        await services.redis.zrem(index, *gone)
    views = await _views(services, [r for r in records if r is not None])
    next_cursor = encode_cursor(page[-1][1], page[-1][0]) if more and page else None
    return JSONResponse({"documents": views, "next_cursor": next_cursor})


@router.delete(f"{V1}/{{document_id}}", response_model=DocumentDeleted, responses=schemas.errors(401, 404, 503),
               summary="Delete a document and its vectors")
async def delete_document(document_id: str, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """Removes every chunk and vector of the document from the store, then its record. A running
    ingestion of it is cancelled (it would not store its chunks: the record no longer names it)."""
    key = keys.document(tenant, document_id)
    record = await _record(services, tenant, document_id)
    # First the record lets go of its job (the job checks it before storing; the UPDATE script skips it)...
    await services.redis.hset(key, mapping={"status": "deleting", "task_id": "", "updated_at": repr(time.time())})
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
    pipe = services.redis.pipeline(transaction=True)
    pipe.delete(key)
    pipe.zrem(keys.tenant_documents(tenant), document_id)
    await pipe.execute()
    return JSONResponse({"document_id": document_id, "deleted": True, "chunks_deleted": removed})


# --- search -------------------------------------------------------------------------------------------------


def _search(settings: Settings, tenant: str, req: SearchRequest) -> list[dict[str, Any]]:
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


router.add_api_route("/api/ingest", seed_ingest, methods=["POST"], include_in_schema=False, status_code=202)
router.add_api_route(V1, upload_document, methods=["POST"], include_in_schema=False, status_code=202)
router.add_api_route(V1, list_documents, methods=["GET"], include_in_schema=False)
