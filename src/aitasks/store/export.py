"""A tenant's job history as JSON Lines or CSV, read from the store of record a keyset page at a time,
so an export of millions of rows streams in constant memory (``GET /api/v1/tasks/export``,
``aitasks jobs export``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import orjson
import sqlalchemy as sa

from aitasks.jobs.models import Job
from aitasks.store import engine as engines
from aitasks.store.records import Filters, list_jobs

FORMATS = ("jsonl", "csv")
MEDIA_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
PAGE_ROWS = 500
# The CSV's columns: the status document's fields, then the job's input and result as JSON text.
CSV_COLUMNS = ("task_id", "task_type", "status", "queue", "attempts", "created_at", "started_at", "finished_at",
               "worker", "message", "error_type", "error", "parent", "children", "input", "result")


def document(job: Job) -> dict[str, Any]:
    """One exported job: its status document, its input as validated at submit (``prompt``, ``parameters``;
    file inputs as artifact references, never bytes) and its result."""
    return {**job.status_view(), "input": job.input, "result": job.result}


def pages(database_url: str, tenant: str, filters: Filters, rows: int = PAGE_ROWS) -> Iterator[list[Job]]:
    """The tenant's recorded jobs, newest first, one page per short read (no connection held between)."""
    cursor: str | None = None
    while True:
        with engines.shared(database_url).connect() as connection:
            page, cursor = list_jobs(connection, tenant, rows, cursor, filters)
        if page:
            yield [job for _, job in page]
        if cursor is None:
            return


def jsonl(jobs: list[Job]) -> bytes:
    return b"".join(orjson.dumps(document(job)) + b"\n" for job in jobs)


def csv_header() -> bytes:
    return _csv_rows([CSV_COLUMNS])


def csv_lines(jobs: list[Job]) -> bytes:
    out = []
    for job in jobs:
        doc = document(job)
        row = []
        for column in CSV_COLUMNS:
            value = doc.get(column)
            if column in ("children", "input", "result"):
                value = orjson.dumps(value).decode() if value else ""
            row.append("" if value is None else str(value))
        out.append(row)
    return _csv_rows(out)


def _csv_rows(rows: Any) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode()


def reachable(database_url: str) -> None:
    """Raise SQLAlchemyError now, before a streamed answer has begun, when the store cannot be read."""
    with engines.shared(database_url).connect() as connection:
        connection.execute(sa.select(1))
