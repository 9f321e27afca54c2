"""Document records and batches in Redis: every read and write of them goes through ``DocumentRecords``.

A document's record (``keys.document``, a hash with no TTL) outlives its ingestion job. The job's end
marks it in the same atomic step as the job (``records_end.lua``, a fragment of the UPDATE script),
which writes ``status``, ``pages``, ``chunks``, ``ocr_pages``, ``tokens``, ``doc_type``, ``error``,
``error_type``, ``finished_at`` and ``updated_at`` only while ``task_id`` still names the job: the
hash's field names are shared with that script. ``keys.tenant_documents`` indexes a tenant's records by
upload time; a batch (``keys.document_batch``, with a TTL) lists its documents, whose status is read
from their own records.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aredis

from aitasks.jobs import keys
from aitasks.jobs.models import Job
from aitasks.jobs.pager import Page, read_page

Record = dict[str, str]  # a record's hash, decoded
MAX_DOCUMENT_ID = 128  # longer ids are refused at upload, so no record has one
MAX_BATCH_ID = 64


@dataclass(frozen=True)
class Upload:
    """What a new upload's record says of it."""

    document_id: str
    task_id: str  # its ingestion job, known before the job exists (the job names the record back)
    filename: str | None
    content_type: str | None
    size: int
    metadata: dict[str, Any]
    batch_id: str | None = None


@dataclass(frozen=True)
class Batch:
    batch_id: str
    created_at: float | None
    document_ids: list[str]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _decode(raw: dict[Any, Any]) -> Record:
    return {_text(k): _text(v) for k, v in raw.items()}


class DocumentRecords:
    """The API's document records (redis.asyncio)."""

    def __init__(self, client: aredis.Redis):
        self.r = client

    @staticmethod
    def key(tenant: str, document_id: str) -> str:
        """The record's key: the ingestion job carries it, for the UPDATE script to mark."""
        return keys.document(tenant, document_id)

    async def read(self, tenant: str, document_id: str) -> Record | None:
        if len(document_id) > MAX_DOCUMENT_ID:
            return None
        raw = await self.r.hgetall(keys.document(tenant, document_id))
        return _decode(raw) if raw else None

    async def read_many(self, tenant: str, document_ids: list[str]) -> list[Record | None]:
        """The records in order, None for an id without one (one round trip)."""
        pipe = self.r.pipeline(transaction=False)
        for document_id in document_ids:
            pipe.hgetall(keys.document(tenant, document_id))
        return [_decode(raw) if raw else None for raw in await pipe.execute()] if document_ids else []

    async def create(self, tenant: str, upload: Upload) -> Record:
        """Write a new upload's record, ``processing``, and index it; returns the record it replaced ({}
        for a new id). A re-upload starts clean (no numbers or error of the last run) but keeps
        ``created_at``."""
        key = keys.document(tenant, upload.document_id)
        previous = _decode(await self.r.hgetall(key))
        now = time.time()
        record = {"document_id": upload.document_id, "tenant": tenant, "status": "processing",
                  "filename": upload.filename or "", "content_type": upload.content_type or "",
                  "bytes": str(upload.size), "metadata": orjson.dumps(upload.metadata).decode(),
                  "task_id": upload.task_id, "batch_id": upload.batch_id or "",
                  "created_at": previous.get("created_at") or repr(now), "uploaded_at": repr(now),
                  "updated_at": repr(now)}
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(key)
        pipe.hset(key, mapping=record)  # type: ignore[arg-type]
        pipe.zadd(keys.tenant_documents(tenant), {upload.document_id: int(now * 1000)})
        await pipe.execute()
        return previous

    async def mark_failed(self, tenant: str, document_id: str, error: str, error_type: str) -> None:
        """For a failure before the job exists (it could not be queued): the UPDATE script marks the rest."""
        await self.r.hset(keys.document(tenant, document_id), mapping={
            "status": "failed", "error": error, "error_type": error_type, "updated_at": repr(time.time())})

    async def mark_deleting(self, tenant: str, document_id: str) -> None:
        """The record lets go of its job: the job checks ``task_id`` before storing, the UPDATE script
        leaves the record alone. Left so when the vectors cannot be deleted, so DELETE can be repeated."""
        await self.r.hset(keys.document(tenant, document_id), mapping={
            "status": "deleting", "task_id": "", "updated_at": repr(time.time())})

    async def delete(self, tenant: str, document_id: str) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.delete(keys.document(tenant, document_id))
        pipe.zrem(keys.tenant_documents(tenant), document_id)
        await pipe.execute()

    async def page(self, tenant: str, limit: int, cursor: str | None) -> Page[Record]:
        """The tenant's records, most recently uploaded first. Raises ValueError for a cursor not ours."""
        async def load(ids: list[str]) -> list[Record | None]:
            return await self.read_many(tenant, ids)

        return await read_page(self.r, keys.tenant_documents(tenant), cursor, limit, load, batch=limit + 1)

    async def ingestion_jobs(self, records: list[Record]) -> list[Job | None]:
        """The job of each record still processing (None for the others, or a job record gone), in one
        round trip: their live progress is part of the record's status."""
        task_ids = [r.get("task_id") if r.get("status") == "processing" else None for r in records]
        wanted = [t for t in task_ids if t]
        if not wanted:
            return [None] * len(records)
        pipe = self.r.pipeline(transaction=False)
        for task_id in wanted:
            pipe.hgetall(keys.job(task_id))
        found = dict(zip(wanted, await pipe.execute(), strict=True))
        return [Job.from_hash(found[t]) if t and found.get(t) else None for t in task_ids]

    async def create_batch(self, tenant: str, document_ids: list[str]) -> str:
        """A new batch of these documents; returns its id."""
        batch_id = uuid.uuid4().hex
        key = keys.document_batch(tenant, batch_id)
        pipe = self.r.pipeline(transaction=True)
        pipe.hset(key, mapping={"batch_id": batch_id, "created_at": repr(time.time()),
                                "documents": orjson.dumps(document_ids).decode()})
        pipe.expire(key, keys.DOCUMENT_BATCH_TTL_S)
        await pipe.execute()
        return batch_id

    async def read_batch(self, tenant: str, batch_id: str) -> Batch | None:
        if len(batch_id) > MAX_BATCH_ID:
            return None
        raw = await self.r.hgetall(keys.document_batch(tenant, batch_id))
        if not raw:
            return None
        batch = _decode(raw)
        created = batch.get("created_at")
        return Batch(batch_id, float(created) if created else None, orjson.loads(batch.get("documents") or "[]"))
