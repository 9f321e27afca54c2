"""Document records (documents/records.py) and the shared cursor pager (jobs/pager.py) against a real
redis-server: create, read, pages, delete, marks and batches; the fields the UPDATE script marks; a
job's progress ``stage`` as a field of its record, and the document's status built from it."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aredis

from aitasks.api.document_views import view
from aitasks.documents.records import DocumentRecords, Record, Upload
from aitasks.jobs import keys
from aitasks.jobs.artifacts import ArtifactStore
from aitasks.jobs.models import Job, Status
from aitasks.jobs.pager import decode_cursor, encode_cursor
from aitasks.jobs.store import AsyncJobStore, JobStore
from aitasks.service.redis_server import RedisServer
from aitasks.worker.context import JobContext

TENANT = "acme"


@pytest.fixture(autouse=True)
def r(server: RedisServer) -> Iterator[redis.Redis]:
    """A clean database for every test."""
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


def run(server: RedisServer, work: Any) -> Any:
    """``work(records)`` on a fresh asyncio client, as the API holds one (bytes replies, not decoded)."""
    async def main() -> Any:
        client = aredis.Redis.from_url(server.url)
        try:
            return await work(DocumentRecords(client))
        finally:
            await client.aclose()

    return asyncio.run(main())


def upload(document_id: str, task_id: str = "job-1", **kw: Any) -> Upload:
    fields: dict[str, Any] = {"filename": f"{document_id}.pdf", "content_type": "application/pdf", "size": 1234,
                              "metadata": {"team": "hr", "year": 2026}}
    return Upload(document_id, task_id, **{**fields, **kw})


def create_all(server: RedisServer, ids: list[str]) -> None:
    """One record per id, uploaded in this order (a few ms apart, so newest first is the reverse)."""
    async def work(records: DocumentRecords) -> None:
        for document_id in ids:
            await records.create(TENANT, upload(document_id))
            await asyncio.sleep(0.003)

    run(server, work)


def walk(server: RedisServer, limit: int) -> list[list[str]]:
    """Every page of the tenant's documents, following ``next_cursor``."""
    async def work(records: DocumentRecords) -> list[list[str]]:
        pages: list[list[str]] = []
        cursor = None
        while len(pages) < 20:
            page = await records.page(TENANT, limit, cursor)
            pages.append([rec["document_id"] for rec in page.items])
            cursor = page.next_cursor
            if cursor is None:
                break
        return pages

    return run(server, work)  # type: ignore[no-any-return]


# --- create, read, marks, delete ------------------------------------------------------------------------


def test_create_writes_the_record_and_indexes_it(server: RedisServer, r: redis.Redis) -> None:
    before = time.time()
    previous = run(server, lambda rec: rec.create(TENANT, upload("handbook", batch_id="b1")))
    assert previous == {}
    got: Record = run(server, lambda rec: rec.read(TENANT, "handbook"))
    assert got == r.hgetall(keys.document(TENANT, "handbook"))
    times = {k: float(got.pop(k)) for k in ("created_at", "uploaded_at", "updated_at")}
    assert before <= times["created_at"] == times["uploaded_at"] == times["updated_at"] <= time.time()
    assert got == {"document_id": "handbook", "tenant": TENANT, "status": "processing",
                   "filename": "handbook.pdf", "content_type": "application/pdf", "bytes": "1234",
                   "metadata": '{"team":"hr","year":2026}', "task_id": "job-1", "batch_id": "b1"}
    score = r.zscore(keys.tenant_documents(TENANT), "handbook")
    assert score is not None and abs(score - times["uploaded_at"] * 1000) < 2
    assert r.ttl(keys.document(TENANT, "handbook")) == -1  # the record outlives its job
    assert DocumentRecords.key(TENANT, "handbook") == keys.document(TENANT, "handbook")


def test_a_reupload_starts_a_clean_record_but_keeps_created_at(server: RedisServer, r: redis.Redis) -> None:
    run(server, lambda rec: rec.create(TENANT, upload("notes", task_id="job-1")))
    first = r.hgetall(keys.document(TENANT, "notes"))
    r.hset(keys.document(TENANT, "notes"), mapping={"status": "completed", "pages": "3", "chunks": "9",
                                                    "error": "old", "finished_at": "1.0"})
    time.sleep(0.01)
    previous = run(server, lambda rec: rec.create(TENANT, upload("notes", task_id="job-2", filename=None)))
    assert previous["task_id"] == "job-1" and previous["status"] == "completed" and previous["pages"] == "3"
    now = r.hgetall(keys.document(TENANT, "notes"))
    assert now["created_at"] == first["created_at"] and float(now["uploaded_at"]) > float(first["uploaded_at"])
    assert now["task_id"] == "job-2" and now["status"] == "processing" and now["filename"] == ""
    assert not {"pages", "chunks", "error", "finished_at"} & set(now)


def test_read_of_an_unknown_or_impossible_id_is_none(server: RedisServer) -> None:
    assert run(server, lambda rec: rec.read(TENANT, "nothing")) is None
    assert run(server, lambda rec: rec.read(TENANT, "x" * 129)) is None
    run(server, lambda rec: rec.create("other", upload("theirs")))
    assert run(server, lambda rec: rec.read(TENANT, "theirs")) is None  # tenants never see each other's
    found = run(server, lambda rec: rec.read_many("other", ["nothing", "theirs"]))
    assert found[0] is None and found[1]["document_id"] == "theirs"
    assert run(server, lambda rec: rec.read_many("other", [])) == []


def test_marks_failed_and_deleting_then_delete(server: RedisServer, r: redis.Redis) -> None:
    run(server, lambda rec: rec.create(TENANT, upload("a")))
    run(server, lambda rec: rec.mark_failed(TENANT, "a", "The job could not be queued: down", "ConnectionError"))
    rec = r.hgetall(keys.document(TENANT, "a"))
    assert (rec["status"], rec["error"], rec["error_type"], rec["task_id"]) == (
        "failed", "The job could not be queued: down", "ConnectionError", "job-1")
    run(server, lambda rec: rec.mark_deleting(TENANT, "a"))
    rec = r.hgetall(keys.document(TENANT, "a"))
    assert (rec["status"], rec["task_id"]) == ("deleting", "")
    assert float(rec["updated_at"]) >= float(rec["uploaded_at"])
    run(server, lambda rec: rec.delete(TENANT, "a"))
    assert not r.exists(keys.document(TENANT, "a"))
    assert r.zscore(keys.tenant_documents(TENANT), "a") is None


def test_the_update_script_marks_a_record_this_store_wrote(server: RedisServer, r: redis.Redis) -> None:
    """The record's field names are shared with records_end.lua: the job's end marks it completed."""
    run(server, lambda rec: rec.create(TENANT, upload("manual", task_id="j-manual")))
    job = Job(id="j-manual", type="document_ingestion", tenant=TENANT, queue="cpu", status=Status.PROCESSING,
              document=DocumentRecords.key(TENANT, "manual"))
    r.hset(keys.job(job.id), mapping=job.to_hash())
    JobStore(r).update(job.id, {"status": "SUCCESS", "result": {"pages": 2, "chunks": 5, "ocr_pages": 0,
                                                                 "tokens": 800, "doc_type": "pdf"}})
    record: Record = run(server, lambda rec: rec.read(TENANT, "manual"))
    body = view(record)
    assert (body["status"], body["pages"], body["chunks"], body["ocr_pages"], body["doc_type"]) == (
        "completed", 2, 5, 0, "pdf")
    assert body["metadata"] == {"team": "hr", "year": 2026} and body["finished_at"]


# --- pages (the shared pager) ------------------------------------------------------------------------------


def test_pages_walk_newest_first_without_gaps(server: RedisServer) -> None:
    ids = [f"doc-{i}" for i in range(7)]
    create_all(server, ids)
    assert walk(server, 3) == [ids[:3:-1], ids[3:0:-1], ids[:1]]
    assert walk(server, 7) == [ids[::-1]]  # exactly one full page: no cursor to an empty one
    assert walk(server, 50) == [ids[::-1]]


def test_an_empty_index_gives_an_empty_last_page(server: RedisServer) -> None:
    assert walk(server, 5) == [[]]


def test_ties_on_the_score_go_by_id_across_pages(server: RedisServer, r: redis.Redis) -> None:
    """Ids uploaded in the same millisecond: the cursor's id decides what comes after it."""
    for name in ("a", "b", "c", "d"):
        r.hset(keys.document(TENANT, name), mapping={"document_id": name, "status": "completed"})
        r.zadd(keys.tenant_documents(TENANT), {name: 1_700_000_000_000})
    assert walk(server, 1) == [["d"], ["c"], ["b"], ["a"]]
    assert walk(server, 3) == [["d", "c", "b"], ["a"]]


def test_ids_whose_record_is_gone_leave_the_index(server: RedisServer, r: redis.Redis) -> None:
    ids = [f"doc-{i}" for i in range(6)]
    create_all(server, ids)
    r.delete(keys.document(TENANT, "doc-4"), keys.document(TENANT, "doc-1"))
    assert walk(server, 2) == [["doc-5", "doc-3"], ["doc-2", "doc-0"]]
    assert r.zrange(keys.tenant_documents(TENANT), 0, -1) == ["doc-0", "doc-2", "doc-3", "doc-5"]


def test_a_cursor_keeps_its_format_and_a_foreign_one_is_refused(server: RedisServer) -> None:
    cursor = encode_cursor(1_700_000_000_123.0, "job-9")
    assert base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)) == b"1700000000123:job-9"
    assert decode_cursor(cursor) == (1_700_000_000_123.0, "job-9")
    for bad in ("%%%not-a-cursor", base64.urlsafe_b64encode(b"yesterday:abc").decode(),
                base64.urlsafe_b64encode(b"\xff\xfe\xfd").decode()):
        with pytest.raises(ValueError):
            run(server, lambda rec, c=bad: rec.page(TENANT, 2, c))


def test_the_jobs_listing_pages_and_filters_with_the_same_pager(server: RedisServer, r: redis.Redis) -> None:
    statuses = [Status.SUCCESS, Status.FAILURE, Status.SUCCESS, Status.SUCCESS, Status.FAILURE]
    for i, status in enumerate(statuses):
        job = Job(id=f"job-{i}", type="echo", tenant=TENANT, queue="cpu", status=status,
                  created_at=1_700_000_000 + i)
        r.hset(keys.job(job.id), mapping=job.to_hash())
        r.zadd(keys.tenant_index(TENANT), {job.id: int(job.created_at * 1000)})

    async def pages(limit: int, status: set[Status] | None) -> list[list[str]]:
        client = aredis.Redis.from_url(server.url)
        store, out, cursor = AsyncJobStore(client), [], None
        try:
            while len(out) < 20:
                page = await store.list(TENANT, limit, cursor, status, None)
                out.append([j.id for j in page.jobs])
                if (cursor := page.next_cursor) is None:
                    return out
        finally:
            await client.aclose()
        raise AssertionError(out)

    assert asyncio.run(pages(2, None)) == [["job-4", "job-3"], ["job-2", "job-1"], ["job-0"]]
    assert asyncio.run(pages(2, {Status.SUCCESS})) == [["job-3", "job-2"], ["job-0"]]
    assert asyncio.run(pages(5, {Status.FAILURE})) == [["job-4", "job-1"]]
    assert asyncio.run(pages(5, None)) == [["job-4", "job-3", "job-2", "job-1", "job-0"]]


# --- batches --------------------------------------------------------------------------------------------


def test_batches_are_created_read_and_expire(server: RedisServer, r: redis.Redis) -> None:
    batch_id = run(server, lambda rec: rec.create_batch(TENANT, ["x", "y"]))
    batch = run(server, lambda rec: rec.read_batch(TENANT, batch_id))
    assert batch.batch_id == batch_id and batch.document_ids == ["x", "y"]
    assert batch.created_at is not None and abs(batch.created_at - time.time()) < 60
    assert 0 < r.ttl(keys.document_batch(TENANT, batch_id)) <= keys.DOCUMENT_BATCH_TTL_S
    assert run(server, lambda rec: rec.read_batch("other", batch_id)) is None
    assert run(server, lambda rec: rec.read_batch(TENANT, "f" * 65)) is None


# --- the job's stage --------------------------------------------------------------------------------------


def test_progress_writes_the_stage_and_the_status_shows_it(server: RedisServer, r: redis.Redis,
                                                           tmp_path: Path) -> None:
    run(server, lambda rec: rec.create(TENANT, upload("scan", task_id="j-scan")))
    job = Job(id="j-scan", type="document_ingestion", tenant=TENANT, queue="cpu",
              document=DocumentRecords.key(TENANT, "scan"))
    r.hset(keys.job(job.id), mapping=job.to_hash())

    def status() -> dict[str, Any]:
        async def work(rec: DocumentRecords) -> dict[str, Any]:
            record = await rec.read(TENANT, "scan")
            assert record is not None
            jobs = await rec.ingestion_jobs([record])
            return view(record, jobs[0])

        return run(server, work)  # type: ignore[no-any-return]

    assert status()["stage"] == "queued" and status()["progress"] == 0
    JobStore(r).update(job.id, {"status": "PROCESSING", "message": "Started"})
    ctx = JobContext(job, JobStore(r), ArtifactStore(tmp_path), attempt=1, delivery=1)
    ctx.progress(50, "embed 11%", stage="embed")
    assert r.hget(keys.job(job.id), "stage") == "embed"
    assert (status()["stage"], status()["progress"], status()["message"]) == ("embed", 50, "embed 11%")
    ctx.progress(60, "a note without a stage")
    ctx.flush()  # written now, not at the next report after the write interval
    assert r.hget(keys.job(job.id), "stage") == "" and status()["stage"] is None
    ctx.progress(70, "store 0%", stage="store")
    ctx.flush()
    JobStore(r).update(job.id, {"status": "RETRY", "message": "Attempt 1 failed; retrying in 2.0s"})
    assert Job.from_hash(r.hgetall(keys.job(job.id))).stage == "store"
    assert status()["stage"] is None  # waiting for its next attempt: in no stage
    assert orjson.loads(orjson.dumps(status()))["status"] == "processing"


def test_a_completed_record_has_no_live_job(server: RedisServer, r: redis.Redis) -> None:
    run(server, lambda rec: rec.create(TENANT, upload("done", task_id="j-done")))
    r.hset(keys.document(TENANT, "done"), "status", "completed")
    r.hset(keys.job("j-done"), mapping=Job(id="j-done", type="document_ingestion", tenant=TENANT,
                                            queue="cpu").to_hash())
    records = run(server, lambda rec: rec.read_many(TENANT, ["done"]))
    assert run(server, lambda rec: rec.ingestion_jobs(records)) == [None]
    assert run(server, lambda rec: rec.ingestion_jobs([])) == []
