"""``document_ingestion``: one uploaded document -> text (OCR where needed) -> chunks -> vectors in the store.

Seed 004's ``process_document``. The API creates the job with the document's record (``POST
/api/v1/documents/``); the UPDATE script marks that record completed or failed when the job ends,
whoever ends it. Running twice (a retry, a redelivery after a killed worker) leaves one set of chunks:
the store replaces a document's chunks in one step. A bad file is a ``DocumentError``: FAILURE at once,
with the reason, never retried; a failed store write is transient: retried with backoff.
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field

from aitasks.documents import service
from aitasks.documents.errors import DocumentError, InvalidStoreArgument
from aitasks.errors import JobCancelled, JobError, TransientJobError
from aitasks.jobs.files import DocumentFile
from aitasks.processors.registry import job_type
from aitasks.settings import get_settings
from aitasks.worker.context import JobContext

log = logging.getLogger(__name__)

NAME = "document_ingestion"
# The same shape as documents.store.DOCUMENT_ID_RE (checked again there); repeated here because that
# module imports numpy, which the API process must not load at start.
DOCUMENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
# Each stage's share of the job's progress, in percent.
STAGE_RANGES = {"extract": (0, 10), "ocr": (10, 40), "chunk": (40, 45), "embed": (45, 90), "store": (90, 99)}

MetadataValue = str | int | float | bool


class DocumentIngestionInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: DocumentFile
    document_id: str = Field(pattern=DOCUMENT_ID_PATTERN, description="The document's id within the tenant; "
                             "ingesting the same id again replaces its chunks.")
    filename: str | None = Field(None, max_length=255, description="The name search results show.")
    content_type: str | None = Field(None, max_length=255, description="The upload's declared media type.")
    metadata: dict[str, MetadataValue] = Field(default_factory=dict, description="Flat key/value pairs that "
                                               "search filters match exactly.")


def preload() -> None:
    settings = get_settings()
    service.embedder(settings)
    service.store(settings)


class _Stages:
    """The pipeline's (stage, fraction) reports as the job's progress; remembers the stage it is in."""

    def __init__(self, ctx: JobContext):
        self.ctx = ctx
        self.stage = "start"

    def __call__(self, stage: str, fraction: float) -> None:
        if stage != self.stage and stage == "store":
            self._check_owner()
        self.stage = stage
        low, high = STAGE_RANGES.get(stage, (0, 99))
        self.ctx.progress(low + (high - low) * max(0.0, min(1.0, fraction)), f"{stage} {int(100 * fraction)}%",
                          stage=stage)

    def _check_owner(self) -> None:
        """Before writing vectors: the record still names this job (not deleted, not re-uploaded since)."""
        job = self.ctx.job
        if not job.document:
            return
        try:
            owner = self.ctx.document_owner()
        except redis.RedisError as exc:
            log.warning("document record of job %s not read: %s", job.id, exc)
            return
        if owner != job.id:
            raise JobCancelled("the document was deleted or uploaded again meanwhile; this run's chunks are "
                               "not stored")


@job_type(
    NAME, input=DocumentIngestionInput, queue="cpu", soft_time_limit_s=840, time_limit_s=900, max_retries=3,
    retry_backoff_s=2.0, preload=preload, submit_path="POST /api/v1/documents/",
    description="Read a document (PDF, DOCX, TXT, Markdown, HTML, scans with OCR), cut it into token-aware "
                "chunks, embed them and store them for search. Upload through POST /api/v1/documents/.",
    examples=({"task_type": NAME, "file": "<base64 PDF>", "document_id": "handbook-2026",
               "filename": "handbook.pdf", "metadata": {"team": "hr"}},),
)
def document_ingestion(data: DocumentIngestionInput, ctx: JobContext) -> dict[str, Any]:
    if not ctx.job.document:
        raise JobError("document_ingestion keeps a document record: upload the file to POST /api/v1/documents/ "
                       "(or the seed's POST /api/ingest/) instead of submitting the job type directly")
    from aitasks.documents import embedding
    from aitasks.documents.batched import BatchedEncode
    from aitasks.documents.pipeline import ingest_document

    settings = get_settings()
    raw = ctx.read_input(data.file)
    ctx.progress(0, "loading the embedding model")
    model = service.embedder(settings)
    try:
        store = service.store(settings)
    except InvalidStoreArgument as exc:
        raise JobError(f"the vector store cannot be used: {exc}") from None
    except Exception as exc:  # a server store not reachable yet: worth another attempt
        raise TransientJobError(f"the vector store cannot be opened: {exc}") from exc
    stages = _Stages(ctx)
    # shares model calls and store commits with the other jobs of this process (--pool threads)
    encode = BatchedEncode()
    try:
        with encode:
            result = ingest_document(
                store, model, ctx.job.tenant, data.document_id, raw, filename=data.filename or data.file.filename,
                content_type=data.content_type, metadata=data.metadata, limits=service.limits(settings),
                progress=stages, check_cancel=ctx.check_cancel, encode=encode, write=encode.write)
    except (DocumentError, JobCancelled, JobError):
        raise
    except InvalidStoreArgument as exc:
        raise JobError(str(exc)) from None
    except Exception as exc:
        if stages.stage != "store":
            raise
        service.reset_store(settings)
        raise TransientJobError(f"writing to the vector store failed: {type(exc).__name__}: {exc}") from exc
    return {"document_id": data.document_id, "filename": data.filename or data.file.filename,
            "doc_type": result.doc_type, "pages": result.pages, "ocr_pages": result.ocr_pages,
            "chunks": result.chunks, "tokens": result.tokens, "embedding_model": model.name,
            "model_loads_in_process": embedding.LOADS, "embedding_batch": encode.largest_batch,
            "store_batch": encode.largest_write}
