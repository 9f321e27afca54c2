"""Document records in the store of record, beyond what the recorder writes when an ingestion job ends
(records.write_batch): a deleted document leaves SQL too, and a Redis that lost its data is filled again
with every recorded document, so documents still list and answer their status (their chunks and vectors
live in the vector store, outside Redis, and still search)."""

from __future__ import annotations

import time

import orjson
import redis
import sqlalchemy as sa

from aitasks.jobs import keys
from aitasks.store.schema import documents

BATCH = 500


def delete(db: sa.Engine, tenant: str, document_id: str) -> None:
    with db.begin() as connection:
        connection.execute(sa.delete(documents).where(documents.c.tenant == tenant, documents.c.id == document_id))


def refill(r: redis.Redis, db: sa.Engine) -> int | None:
    """Every recorded document Redis lacks written back (record and the tenant's index), unless Redis holds
    them all (its ``loaded`` mark). A record Redis has is newer than SQL's and is left alone. Returns how
    many were written, or None when Redis had its mark."""
    if r.exists(keys.DOCUMENTS_LOADED):
        return None
    written = 0
    with db.connect() as connection:
        rows = connection.execute(sa.select(documents.c.tenant, documents.c.id, documents.c.record)).all()
    for start in range(0, len(rows), BATCH):
        chunk = rows[start:start + BATCH]
        pipe = r.pipeline(transaction=False)
        for row in chunk:
            pipe.exists(keys.document(row.tenant, row.id))
        present = pipe.execute()
        pipe = r.pipeline(transaction=False)
        for row, there in zip(chunk, present, strict=True):
            if there:
                continue
            record = {str(k): str(v) for k, v in orjson.loads(row.record).items()}
            uploaded = float(record.get("uploaded_at") or record.get("created_at") or time.time())
            pipe.hset(keys.document(row.tenant, row.id), mapping=record)  # type: ignore[arg-type]
            pipe.zadd(keys.tenant_documents(row.tenant), {row.id: int(uploaded * 1000)})
            written += 1
        pipe.execute()
    r.set(keys.DOCUMENTS_LOADED, repr(time.time()))
    return written
