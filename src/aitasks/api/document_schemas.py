"""Request and response shapes of the document API (routes/documents.py), for validation and OpenAPI."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, WithJsonSchema

from aitasks.api import schemas
from aitasks.jobs.keys import PRIORITIES

ACCEPTED_MESSAGE = "Processing started in background."


class DocumentAccepted(BaseModel):
    message: str = Field(examples=[ACCEPTED_MESSAGE])
    task_id: str = Field(description="The document_ingestion job (GET /api/v1/tasks/{task_id}/status/).")
    document_id: str = Field(examples=["handbook-2026"])
    status: str = Field(examples=["processing"])
    status_url: str


class DocumentStatus(BaseModel):
    document_id: str
    status: str = Field(description="processing | completed | failed", examples=["completed"])
    pages: int | None = Field(None, description="Pages read (1 for formats without pages); null until completed.")
    chunks: int | None = Field(None, description="Chunks stored for search; null until completed.")
    ocr_pages: int | None = Field(None, description="Pages read by OCR; null until completed.")
    error: str | None = Field(None, description="Why it failed.")
    error_type: str | None = Field(None, examples=["EncryptedDocument"])
    doc_type: str | None = Field(None, description="Completed: pdf | docx | text | markdown | html | png | jpeg.")
    filename: str | None = None
    content_type: str | None = None
    bytes: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    task_id: str | None = None
    batch_id: str | None = None
    created_at: str | None = None
    uploaded_at: str | None = None
    finished_at: str | None = None
    progress: int | None = Field(None, description="While processing: the job's progress, 0-100.")
    stage: str | None = Field(None, description="While processing: extract | ocr | chunk | embed | store.")
    message: str | None = Field(None, description="While processing: the job's progress message.")


class DocumentList(BaseModel):
    documents: list[DocumentStatus]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null at the end.")


class DocumentDeleted(BaseModel):
    document_id: str
    deleted: bool
    chunks_deleted: int


class BatchDocument(BaseModel):
    document_id: str
    task_id: str | None = None
    filename: str | None = None
    status: str


class BatchAccepted(BaseModel):
    message: str = Field(examples=[ACCEPTED_MESSAGE])
    batch_id: str
    status: str = Field(examples=["processing"])
    documents: list[BatchDocument]
    status_url: str


class BatchStatus(BaseModel):
    batch_id: str
    status: str = Field(description="processing (any still running) | completed (all) | failed (all) | "
                                    "completed_with_errors")
    total: int
    processing: int
    completed: int
    failed: int
    deleted: int
    created_at: str | None
    documents: list[DocumentStatus]


# What the store enforces (documents/store.py), said in the schema so a client (and the fuzzer) knows it.
DOCUMENT_ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
METADATA_KEY_PATTERN = "^[A-Za-z_][A-Za-z0-9_.-]{0,63}$"
MetadataValue = Annotated[str, StringConstraints(max_length=1024)] | int | Annotated[float, Field(allow_inf_nan=False)] | bool
MetadataKey = Annotated[str, StringConstraints(pattern=METADATA_KEY_PATTERN)]
METADATA_SCHEMA: dict[str, Any] = {
    "type": "object", "maxProperties": 32, "propertyNames": {"pattern": METADATA_KEY_PATTERN},
    "additionalProperties": {"anyOf": [{"type": "string", "maxLength": 1024}, {"type": "number"},
                                       {"type": "boolean"}]}}


class SearchRequest(BaseModel):
    # Strict: `alpha: false` or `top_k: "5"` is refused, as the schema says, not coerced.
    model_config = ConfigDict(extra="forbid", strict=True)

    query: str = Field(min_length=1, max_length=2000, description="A question or keywords, in any wording.")
    top_k: int = Field(5, ge=1, le=100, description="How many results.")
    document_ids: list[Annotated[str, StringConstraints(pattern=DOCUMENT_ID_PATTERN)]] | None = Field(
        None, max_length=1000, description="Only in these documents.")
    filters: Annotated[dict[MetadataKey, MetadataValue], WithJsonSchema(METADATA_SCHEMA)] | None = Field(
        None, max_length=32, description="Only documents whose metadata equals every pair.")
    alpha: float = Field(0.8, ge=0.0, le=1.0, description="Weight of the vector score against the keyword "
                                                          "(BM25) score; 1 is vectors only, 0 keywords only. In "
                                                          "between, keywords count only for a query naming an "
                                                          "identifier, number or name; others rank by vector.")


class SearchResult(BaseModel):
    document_id: str
    filename: str | None
    page: int | None = Field(description="Counted from 1; null for a format without pages (DOCX, text).")
    score: float
    text: str


class SearchResponse(BaseModel):
    results: list[SearchResult]


# --- the multipart uploads, described by hand: their handlers read the form themselves ------------------

# `metadata` is a JSON object sent as a part of its own (the server parses the part's text as JSON).
METADATA_PART: dict[str, Any] = {**METADATA_SCHEMA, "description": "A flat JSON object (string, number or boolean "
                                                                   "values) that search `filters` match."}
JSON_PARTS = {"metadata": {"contentType": "application/json"}}
PRIORITY_PART: dict[str, Any] = {"type": "string", "enum": list(PRIORITIES), "default": "normal",
                                 "description": "The ingestion job's place in your own line (fair dispatch)."}
INGEST_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"encoding": JSON_PARTS, "schema": {
        "type": "object", "required": ["file"], "additionalProperties": False,
        "properties": {
            "file": {"type": "string", "format": "binary",
                     "description": "PDF, DOCX, TXT, Markdown, HTML, or a PNG/JPEG scan."},
            "document_id": {"type": "string", "pattern": DOCUMENT_ID_PATTERN,
                            "description": "Your id for it (default: a new one). The same id again replaces "
                                           "the document's chunks and record."},
            "metadata": METADATA_PART,
            "priority": PRIORITY_PART,
        }}}}},
}
BATCH_DOC: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"multipart/form-data": {"encoding": JSON_PARTS, "schema": {
        "type": "object", "required": ["file"], "additionalProperties": False,
        "properties": {
            "file": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"},
                     "description": "Several parts named `file`, one per document (at most AITASKS_MAX_BATCH_FILES; "
                                    "all together within AITASKS_MAX_UPLOAD_BYTES)."},
            "metadata": {**METADATA_PART, "description": "A flat JSON object given to every document."},
            "priority": {**PRIORITY_PART, "description": "Every document's ingestion job's place in your own line."},
        }}}}},
}
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    **schemas.errors(400, 401, 403, 413, 429, 507),
    415: {"model": schemas.ErrorBody, "description": "Not a supported type, or the extension and the content "
                                                     "disagree (`unsupported_document`, `type_mismatch`)."},
    422: {"model": schemas.ErrorBody, "description": "The file cannot be read: `encrypted_document`, "
                                                     "`corrupt_document`, `empty_document`."},
    503: schemas.ERRORS[503],
}
