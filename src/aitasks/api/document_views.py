"""How document records look to clients (``DocumentStatus``, ``BatchStatus`` in api/document_schemas.py)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from aitasks.documents.records import Batch, DocumentRecords, Record
from aitasks.jobs.models import Job, Status, iso

LOST_AFTER_S = 60.0  # a record 'processing' whose job record is gone this long after upload: the job was lost
BATCH_COUNTS = ("processing", "completed", "failed", "deleted")


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


def view(record: Record, job: Job | None = None, now: float | None = None) -> dict[str, Any]:
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
            # A stage belongs to the run in progress: a job waiting for its retry is in none.
            stage = job.stage if job.status is Status.PROCESSING else None
            out.update(progress=job.progress, message=job.message, stage=stage)
            if job.status is Status.PENDING:
                out["stage"] = "queued"
    return out


async def views(records: DocumentRecords, found: list[Record]) -> list[dict[str, Any]]:
    """Views of many records; the job records are read only for those still processing."""
    jobs: list[Job | None] = await records.ingestion_jobs(found)
    now = time.time()
    return [view(r, j, now) for r, j in zip(found, jobs, strict=True)]


async def batch_view(records: DocumentRecords, tenant: str, batch: Batch) -> dict[str, Any]:
    """The batch's documents from their records (which outlive the jobs), summed up."""
    ids = batch.document_ids
    found = await records.read_many(tenant, ids)
    # A document uploaded again outside the batch no longer belongs to it.
    present = [r for r in found if r is not None and r.get("batch_id") == batch.batch_id]
    by_id = {v["document_id"]: v for v in await views(records, present)}
    documents = [by_id.get(d) or {"document_id": d, "status": "deleted"} for d in ids]
    counts = {s: sum(1 for v in documents if v["status"] == s) for s in BATCH_COUNTS}
    if counts["processing"]:
        status = "processing"
    elif counts["completed"] == len(ids):
        status = "completed"
    elif counts["completed"] == 0:
        status = "failed"
    else:
        status = "completed_with_errors"
    return {"batch_id": batch.batch_id, "status": status, "total": len(ids), **counts,
            "created_at": iso(batch.created_at), "documents": documents}
