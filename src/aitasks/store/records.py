"""Ended jobs in SQL: a Redis record (its hash, as the stream entry carries it) to a row and back,
the recorder's batch write, and the reads of the history paths.

A row is written once, by insert-or-ignore on the job id: a job's record cannot change after it ended
(the UPDATE script refuses), so a batch written again after a recorder died changes nothing, and the
usage counters are bumped only for the rows a batch really inserted, in the same transaction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from aitasks.jobs.models import Job, Status
from aitasks.jobs.pager import decode_cursor, encode_cursor
from aitasks.store import text_search
from aitasks.store.schema import documents, jobs, usage, webhook_deliveries

# Record fields kept in their own columns; every other field goes to ``extra``.
_COLUMNS = {"id", "tenant", "type", "status", "queue", "created_at", "started_at", "finished_at", "attempts",
            "worker", "message", "error_type", "error_message", "input", "result", "artifacts", "parent",
            "children", "idempotency_key", "document"}


def files_until(finished_at: float | str | None, retention_s: int | str | None) -> float:
    """When an ended job's files may go: its end plus its retention, as long as Redis keeps its record
    (``retention_s`` of the record; jobs/models.py's default when it has none)."""
    return float(finished_at or time.time()) + int(retention_s or 3600)


def recorded_files(connection: sa.Connection, job_ids: list[str]) -> dict[str, tuple[float, str]]:
    """Of these job ids, the recorded ones, each with ``files_until`` and its tenant: what the artifact sweep
    keeps, and whose storage the recount charges, once Redis no longer knows a job (worker/artifact_sweep.py,
    worker/storage_recount.py)."""
    rows = connection.execute(sa.select(jobs.c.id, jobs.c.tenant, jobs.c.finished_at, jobs.c.recorded_at,
                                        jobs.c.extra).where(jobs.c.id.in_(job_ids)))
    return {row.id: (files_until(row.finished_at or row.recorded_at, orjson.loads(row.extra).get("retention_s")),
                     row.tenant) for row in rows}


def _opt_float(value: str | None) -> float | None:
    return float(value) if value else None


def job_row(record: dict[str, str], recorded_at: float) -> dict[str, Any]:
    """The row of a job record (the Redis hash's fields, decoded)."""
    return {
        "id": record["id"], "tenant": record["tenant"], "type": record["type"],
        "status": record.get("status", "FAILURE"), "queue": record.get("queue", "cpu"),
        "created_ms": int(float(record.get("created_at") or 0) * 1000),
        "started_at": _opt_float(record.get("started_at")), "finished_at": _opt_float(record.get("finished_at")),
        "attempts": int(record.get("attempts") or 0), "worker": record.get("worker") or None,
        "message": record.get("message", ""), "error_type": record.get("error_type") or None,
        "error": record.get("error_message") or None, "parameters": record.get("input") or "{}",
        "result": record.get("result") or None, "artifacts": record.get("artifacts") or None,
        "parent": record.get("parent") or None, "children": record.get("children") or None,
        "idempotency_key": record.get("idempotency_key") or None, "document": record.get("document") or None,
        "extra": orjson.dumps({k: v for k, v in record.items() if k not in _COLUMNS}).decode(),
        "recorded_at": recorded_at,
    }


def job_from_row(row: sa.Row[Any]) -> Job:
    """The Job a row was written from (so its status view is the one Redis gave)."""
    m = row._mapping
    record: dict[str, str] = orjson.loads(m["extra"])
    record.update({
        "id": m["id"], "tenant": m["tenant"], "type": m["type"], "status": m["status"], "queue": m["queue"],
        "created_at": repr(m["created_ms"] / 1000), "attempts": str(m["attempts"]), "message": m["message"],
        "input": m["parameters"],
    })
    for name, column in (("started_at", "started_at"), ("finished_at", "finished_at")):
        if m[column] is not None:
            record[name] = repr(m[column])
    for name, column in (("worker", "worker"), ("error_type", "error_type"), ("error_message", "error"),
                         ("result", "result"), ("artifacts", "artifacts"), ("parent", "parent"),
                         ("children", "children"), ("document", "document")):
        if m[column] is not None:
            record[name] = m[column]
    return Job.from_hash(record)


def _insert(connection: sa.Connection, table: sa.Table) -> Any:
    return (postgresql.insert(table) if connection.dialect.name == "postgresql" else sqlite.insert(table))


@dataclass
class Ended:
    """One stream entry: the job's record and, for a document's job, the document's record."""

    record: dict[str, str]
    document: dict[str, str] | None = None


def write_batch(connection: sa.Connection, batch: list[Ended]) -> int:
    """Insert the batch's jobs (ignoring ids already there), count usage for the new ones, upsert documents.
    Returns how many jobs were new. The caller commits."""
    now = time.time()
    rows = list({e.record["id"]: job_row(e.record, now) for e in batch if e.record.get("id")}.values())
    inserted: set[str] = set()
    if rows:
        stmt = _insert(connection, jobs).on_conflict_do_nothing(index_elements=["id"]).returning(jobs.c.id)
        for chunk in range(0, len(rows), 500):
            inserted.update(connection.execute(stmt, rows[chunk:chunk + 500]).scalars().all())
    counts: dict[tuple[str, str, str, str], dict[str, float]] = {}
    for row in rows:
        if row["id"] not in inserted:
            continue
        end = row["finished_at"] or now
        day = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%d")
        c = counts.setdefault((row["tenant"], day, row["type"], row["queue"]),
                              {"jobs": 0, "seconds": 0.0, "succeeded": 0, "failed": 0, "revoked": 0})
        c["jobs"] += 1
        if row["started_at"] is not None and row["finished_at"] is not None:
            c["seconds"] += max(0.0, row["finished_at"] - row["started_at"])
        c[{"SUCCESS": "succeeded", "FAILURE": "failed"}.get(row["status"], "revoked")] += 1
    for (tenant, day, job_type, queue), c in counts.items():
        ins = _insert(connection, usage).values(tenant=tenant, day=day, type=job_type, queue=queue, **c)
        connection.execute(ins.on_conflict_do_update(
            index_elements=["tenant", "day", "type", "queue"],
            set_={name: getattr(usage.c, name) + getattr(ins.excluded, name) for name in c}))
    for e in batch:
        # A document's record names itself ``document_id`` (documents/records.py).
        document_id = (e.document or {}).get("document_id") or (e.document or {}).get("id")
        if e.document and document_id and e.record.get("tenant"):
            values = {"tenant": e.record["tenant"], "id": document_id, "status": e.document.get("status"),
                      "job_id": e.record.get("id"), "record": orjson.dumps(e.document).decode(), "updated_at": now}
            ins = _insert(connection, documents).values(**values)
            connection.execute(ins.on_conflict_do_update(
                index_elements=["tenant", "id"],
                set_={k: getattr(ins.excluded, k) for k in ("status", "job_id", "record", "updated_at")}))
    return len(inserted)


def delivery_row(stream_id: str, raw: str) -> dict[str, Any] | None:
    """A webhook delivery attempt's row from its history stream entry (worker/webhooks.py); None if broken."""
    try:
        entry = orjson.loads(raw)
        return {"stream_id": stream_id, "job_id": str(entry["job_id"]), "tenant": str(entry["tenant"]),
                "event": str(entry["event"]), "attempt": int(entry["attempt"]), "at": str(entry["at"]),
                "status_code": entry.get("status_code"), "delivered": bool(entry.get("delivered")),
                "error": entry.get("error")}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def write_deliveries(connection: sa.Connection, rows: list[dict[str, Any]]) -> None:
    """Insert-or-ignore by stream entry: a batch written again writes nothing twice."""
    if rows:
        connection.execute(_insert(connection, webhook_deliveries).on_conflict_do_nothing(
            index_elements=["stream_id"]), rows)


def get_deliveries(connection: sa.Connection, tenant: str, job_id: str) -> list[dict[str, Any]]:
    """The job's delivery log as its status document shows it (oldest first; the tenant's job only)."""
    rows = connection.execute(sa.select(webhook_deliveries).where(
        webhook_deliveries.c.job_id == job_id, webhook_deliveries.c.tenant == tenant)
        .order_by(webhook_deliveries.c.id)).mappings()
    out = []
    for m in rows:
        entry: dict[str, Any] = {"event": m["event"], "attempt": m["attempt"], "at": m["at"]}
        if m["status_code"] is not None:
            entry["status_code"] = m["status_code"]
        entry["delivered"] = bool(m["delivered"])
        if m["error"] is not None:
            entry["error"] = m["error"]
        out.append(entry)
    return out


def get_job(connection: sa.Connection, tenant: str, job_id: str) -> Job | None:
    """The tenant's recorded job; None for an unknown or foreign id (the caller says 404 to both)."""
    row = connection.execute(sa.select(jobs).where(jobs.c.id == job_id, jobs.c.tenant == tenant)).first()
    return job_from_row(row) if row is not None else None


@dataclass
class Filters:
    statuses: set[Status] | None = None
    task_type: str | None = None
    created_after: float | None = None  # epoch seconds, inclusive
    created_before: float | None = None  # epoch seconds, exclusive
    q: str | None = None  # substring of the message or the error, any case

    def keep(self, job: Job) -> bool:
        """The same filter, for a record read from Redis."""
        if self.statuses and job.status not in self.statuses:
            return False
        if self.task_type and job.type != self.task_type:
            return False
        if self.created_after is not None and job.created_at < self.created_after:
            return False
        if self.created_before is not None and job.created_at >= self.created_before:
            return False
        if self.q:
            needle = self.q.lower()
            return needle in (job.message or "").lower() or needle in (job.error_message or "").lower()
        return True


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _holds(table: sa.FromClause, q: str) -> sa.ColumnElement[bool]:
    """The ``q`` filter: ``q`` in the message or the error, any case (the exact test, index or not)."""
    pattern = _like(q)
    return sa.or_(table.c.message.ilike(pattern, escape="\\"), table.c.error.ilike(pattern, escape="\\"))


def _newest_first(table: sa.FromClause) -> tuple[sa.UnaryExpression[Any], ...]:
    return table.c.created_ms.desc(), table.c.id.desc()


def _probe_then_index(connection: sa.Connection, query: sa.Select[Any], tenant: str, q: str,
                      before: tuple[int, str] | None, limit: int) -> list[sa.Row[Any]]:
    """The ``q`` page (text_search.py): the newest PROBE_ROWS rows of the range filtered in order fill it
    when the text is common; otherwise the index narrows it first: on PostgreSQL a pg_trgm bitmap scan, on
    SQLite FTS5's matches (``_fts_page``)."""
    newest = query.order_by(*_newest_first(jobs)).limit(text_search.PROBE_ROWS).subquery()
    probe = sa.select(newest).where(_holds(newest, q)).order_by(*_newest_first(newest)).limit(limit + 1)
    rows = connection.execute(probe).all()
    if len(rows) > limit:
        return list(rows)
    keys = query.with_only_columns(jobs.c.id).order_by(*_newest_first(jobs)).limit(text_search.PROBE_ROWS)
    if (connection.scalar(sa.select(sa.func.count()).select_from(keys.subquery())) or 0) < text_search.PROBE_ROWS:
        return list(rows)  # the probe saw the whole range (an index-only count): its matches are the page
    if connection.dialect.name != "postgresql":
        return _fts_page(connection, query, tenant, q, before, limit)
    # PostgreSQL: the whole narrowed range, its tenant and text served by the GIN index (a bitmap scan),
    # MATERIALIZED so the planner does not walk the tenant's ordered index testing each row instead (it
    # cannot tell how rare a text is: 0.5 s for a rare one over 1,000,000 rows), then ordered.
    found = query.where(_holds(jobs, q)).cte("q_matches").prefix_with("MATERIALIZED")
    return list(connection.execute(sa.select(found).order_by(*_newest_first(found)).limit(limit + 1)).all())


FTS_CHUNK_MAX = 8192  # ids bound per lookup, well under SQLite's 32,766 variables


def _fts_page(connection: sa.Connection, query: sa.Select[Any], tenant: str, q: str,
              before: tuple[int, str] | None, limit: int) -> list[sa.Row[Any]]:
    """SQLite: FTS5's matches newest first, a chunk at a time (growing while the page's other filters turn
    them down), each chunk's jobs read with those filters; a chunk's matches are all newer than the next
    one's, so the rows come in the page's order, and only the jobs the page may show are looked up."""
    rows: list[sa.Row[Any]] = []
    chunk = 4 * (limit + 1)
    while True:
        found = text_search.sqlite_matches(connection, tenant, q, before, chunk)
        if found:
            narrowed = query.where(jobs.c.id.in_([job_id for _, job_id in found]), _holds(jobs, q))
            rows += connection.execute(narrowed.order_by(*_newest_first(jobs)).limit(limit + 1 - len(rows))).all()
        if len(rows) > limit or len(found) < chunk:
            return rows
        before, chunk = found[-1], min(4 * chunk, FTS_CHUNK_MAX)


def list_jobs(connection: sa.Connection, tenant: str, limit: int, cursor: str | None,
              filters: Filters) -> tuple[list[tuple[int, Job]], str | None]:
    """A keyset page of the tenant's recorded jobs (created ms, job), newest first (ties by id, descending); the cursor has
    the Redis pager's form (``encode_cursor(created ms, id)``). No OFFSET: an index range per page."""
    query = sa.select(jobs).where(jobs.c.tenant == tenant)
    if filters.statuses:
        query = query.where(jobs.c.status.in_(sorted(s.value for s in filters.statuses)))
    if filters.task_type:
        query = query.where(jobs.c.type == filters.task_type)
    if filters.created_after is not None:
        query = query.where(jobs.c.created_ms >= int(filters.created_after * 1000))
    if filters.created_before is not None:
        query = query.where(jobs.c.created_ms < int(filters.created_before * 1000))
    before: tuple[int, str] | None = None
    if cursor:
        score, member = decode_cursor(cursor)
        before = (int(score), member)
        query = query.where(sa.tuple_(jobs.c.created_ms, jobs.c.id) < before)
    if filters.q and text_search.indexed(connection, filters.q):
        rows = _probe_then_index(connection, query, tenant, filters.q, before, limit)
    else:
        if filters.q:  # too short for a trigram index, or PostgreSQL without pg_trgm: a scan
            query = query.where(_holds(jobs, filters.q))
        rows = list(connection.execute(query.order_by(*_newest_first(jobs)).limit(limit + 1)).all())
    page = [(int(r._mapping["created_ms"]), job_from_row(r)) for r in rows[:limit]]
    more = len(rows) > limit
    return page, encode_cursor(page[-1][0], page[-1][1].id) if more and page else None
