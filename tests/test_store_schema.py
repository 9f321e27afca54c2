"""The store of record's schema and rows (aitasks.store) on SQLite and on a real PostgreSQL: migrations
from an empty database, the refusal of a newer one, `aitasks db upgrade`, the row round trip, insert-once
with usage counted once, and the keyset listing with its filters."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from aitasks.jobs.models import Job, Status
from aitasks.store import engine as engines
from aitasks.store import migrate, text_search
from aitasks.store.records import Ended, Filters, get_job, job_row, list_jobs, write_batch
from aitasks.store.schema import jobs, metadata, usage
from pg_server import PgServer
from store_db import BACKENDS, database_url, pg_lazy  # noqa: F401  (fixture)


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path, pg_lazy: Callable[[], PgServer]) -> str:  # noqa: F811
    return database_url(request.param, tmp_path, pg_lazy)


def ended_record(job_id: str, tenant: str = "acme", status: str = "SUCCESS", created_at: float = 1_700_000_000.5,
                 **extra: str) -> dict[str, str]:
    job = Job(id=job_id, type="echo", tenant=tenant, queue="cpu", status=Status(status), created_at=created_at,
              input={"text": "hi", "image": {"artifact": "input-0.png", "media_type": "image/png"}})
    record = job.to_hash()
    record.update({"started_at": repr(created_at + 1), "finished_at": repr(created_at + 3.25), "progress": "100",
                   "message": "Done", "worker": "cpu.1@host", "attempts": "1",
                   "result": orjson.dumps({"n": 1}).decode(), "seq": "4"})
    if status == "FAILURE":
        record.update({"error_type": "ValueError", "error_message": "bad pixels", "message": "Failed"})
    record.update(extra)
    return record


def schema_diff(c: sa.Connection) -> list[object]:
    """How the database differs from schema.metadata, leaving out the text index (text_search.py)."""
    skip = text_search.objects()
    context = MigrationContext.configure(c, opts={"include_name": lambda name, *_: name not in skip})
    return list(compare_metadata(context, metadata))


def test_migrations_build_the_schema_the_code_uses_from_an_empty_database(url: str) -> None:
    assert migrate.upgrade(url) == migrate.head()
    assert migrate.upgrade(url) == migrate.head()  # again: nothing to do
    engine = engines.create(url)
    try:
        with engine.connect() as c:
            assert schema_diff(c) == []
            if engines.is_sqlite(url):
                assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        engine.dispose()


def test_a_database_at_the_previous_revision_is_upgraded_keeping_its_rows(url: str) -> None:
    assert migrate.upgrade(url, "0001") == "0001"
    engine = engines.create(url)
    try:
        with engine.begin() as c:
            c.execute(sa.text("INSERT INTO webhook_deliveries (job_id, tenant, event, attempt, at, delivered) "
                              "VALUES ('j1', 'acme', 'completed', 1, '2026-12-06T10:00:00Z', true)"))
        assert migrate.upgrade(url) == migrate.head() != "0001"
        with engine.connect() as c:
            assert schema_diff(c) == []
            row = c.execute(sa.text("SELECT job_id, stream_id FROM webhook_deliveries")).one()
            assert tuple(row) == ("j1", None)
    finally:
        engine.dispose()


def test_a_database_newer_than_the_code_is_refused_and_left_alone(url: str) -> None:
    migrate.upgrade(url)
    engine = engines.create(url)
    try:
        with engine.begin() as c:
            c.execute(sa.text("UPDATE alembic_version SET version_num = '9999_future'"))
    finally:
        engine.dispose()
    with pytest.raises(migrate.SchemaTooNew, match="9999_future.*newer than this aitasks"):
        migrate.upgrade(url)
    engine = engines.create(url)
    try:
        with engine.connect() as c:
            assert c.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "9999_future"
    finally:
        engine.dispose()


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AITASKS_")}, "AITASKS_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "aitasks.cli.main", "db", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_the_db_command_upgrades_and_refuses_a_newer_schema(url: str) -> None:
    out = _cli(url, "upgrade")
    assert out.returncode == 0, out.stderr
    assert f"schema revision {migrate.head()}" in out.stdout
    assert "password" not in out.stdout
    assert _cli(url, "current").stdout.strip().endswith(f"this aitasks: {migrate.head()}")
    engine = engines.create(url)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff'"))
    engine.dispose()
    out = _cli(url, "upgrade")
    assert out.returncode == 2
    assert "newer than this aitasks knows" in out.stderr


def test_the_db_command_says_when_the_database_cannot_be_reached() -> None:
    out = _cli("postgresql://nobody:secret@127.0.0.1:1/none", "upgrade", "--wait-s", "2")
    assert out.returncode == 2
    assert "cannot be reached" in out.stderr
    assert "secret" not in out.stderr + out.stdout  # the password is never shown


def test_a_row_reads_back_as_the_same_job_and_is_written_once(url: str) -> None:
    migrate.upgrade(url)
    engine = engines.create(url)
    try:
        ok = ended_record("j1", webhook="https://example.com/hook", webhook_events="completed")
        failed = ended_record("j2", status="FAILURE")
        with engine.begin() as c:
            assert write_batch(c, [Ended(ok), Ended(failed)]) == 2
        with engine.begin() as c:  # the same batch again (a recorder died before acknowledging it)
            assert write_batch(c, [Ended(ok), Ended(failed)]) == 0
        with engine.connect() as c:
            for record in (ok, failed):
                job = get_job(c, "acme", record["id"])
                assert job is not None
                assert job.status_view() == Job.from_hash(record).status_view()
                assert job.result == Job.from_hash(record).result and job.input == Job.from_hash(record).input
                assert job.webhook == Job.from_hash(record).webhook
            assert get_job(c, "other-tenant", "j1") is None  # tenant isolation
            assert get_job(c, "acme", "nope") is None
            rows = c.execute(sa.select(usage)).all()
        assert len(rows) == 1
        row = rows[0]._mapping
        assert (row["jobs"], row["succeeded"], row["failed"]) == (2, 1, 1)  # counted once, not four times
        assert row["seconds"] == pytest.approx(4.5)
        assert "error" in job_row(failed, time.time()) and job_row(failed, time.time())["error"] == "bad pixels"
    finally:
        engine.dispose()


def test_keyset_pages_and_filters(url: str) -> None:
    migrate.upgrade(url)
    engine = engines.create(url)
    base = 1_700_000_000.0
    batch = [Ended(ended_record(f"a{i:02d}", created_at=base + i // 2, status="FAILURE" if i % 3 == 0 else "SUCCESS"))
             for i in range(30)]  # pairs share a millisecond: ties go by id
    batch.append(Ended(ended_record("b00", tenant="globex", created_at=base + 5)))
    try:
        with engine.begin() as c:
            write_batch(c, batch)
        with engine.connect() as c:
            seen: list[str] = []
            cursor = None
            for _ in range(20):
                page, cursor = list_jobs(c, "acme", 7, cursor, Filters())
                seen += [job.id for _, job in page]
                if cursor is None:
                    break
            assert seen == sorted((f"a{i:02d}" for i in range(30)), reverse=True)  # each once, newest first
            failed, _ = list_jobs(c, "acme", 50, None, Filters(statuses={Status.FAILURE}))
            assert {j.id for _, j in failed} == {f"a{i:02d}" for i in range(0, 30, 3)}
            window, _ = list_jobs(c, "acme", 50, None, Filters(created_after=base + 2, created_before=base + 4))
            assert {j.id for _, j in window} == {"a04", "a05", "a06", "a07"}
            found, _ = list_jobs(c, "acme", 50, None, Filters(q="PIXELS"))
            assert {j.id for _, j in found} == {j.id for _, j in failed}
            assert list_jobs(c, "acme", 50, None, Filters(q="100%_"))[0] == []  # LIKE wildcards are literal
            assert list_jobs(c, "acme", 50, None, Filters(task_type="other"))[0] == []
            assert [j.id for _, j in list_jobs(c, "globex", 50, None, Filters())[0]] == ["b00"]
    finally:
        engine.dispose()


def test_the_text_filter_uses_its_index_for_rare_texts_and_keeps_like_semantics(url: str) -> None:
    """Rows written before migration 0003, between it and 0004 (SQLite's FTS table made again with the
    created ms) and after, found by ``q`` through the index (a rare text: SQLite's FTS path) and through the
    ordered probe (a common one), exactly as ILIKE would; deleted rows leave it."""
    migrate.upgrade(url, "0002")
    engine = engines.create(url)
    base = 1_700_000_000.0
    common = [Ended(ended_record(f"c{i:04d}", created_at=base + i, message=f"Processed item {i}"))
              for i in range(2600)]  # more than PROBE_ROWS: a rare text is past the probe's reach
    try:
        with engine.begin() as c:
            write_batch(c, common[:1000])  # before the index existed: the migration fills it
        migrate.upgrade(url, "0003")
        with engine.begin() as c:
            write_batch(c, common[1000:1800])  # in 0003's index: 0004 refills it from the jobs
        migrate.upgrade(url)
        with engine.begin() as c:
            write_batch(c, common[1800:])
            write_batch(c, [Ended(ended_record("rare-old", created_at=base - 10, status="FAILURE",
                                               error_message='Tile 50%_done "quoted" ZEBRA')),
                            Ended(ended_record("other-tenant", tenant="globex", created_at=base - 5,
                                               message="zebra crossing")),
                            Ended(ended_record("short-tenant", tenant="x", created_at=base - 4,
                                               message="zebra x"))])
        with engine.connect() as c:
            def ids(q: str, limit: int = 50) -> list[str]:
                return [job.id for _, job in list_jobs(c, "acme", limit, None, Filters(q=q))[0]]

            assert ids("zebra") == ["rare-old"]  # past 2,600 newer rows; any case; not the other tenant's
            for tenant, found in (("globex", "other-tenant"), ("x", "short-tenant"), ("glob", None)):
                page = list_jobs(c, tenant, 50, None, Filters(q="zebra"))[0]  # the index's tenant is exact
                assert [job.id for _, job in page] == ([found] if found else []), tenant
            assert ids('50%_done "QUOTED"') == ["rare-old"]  # wildcards and quotes are literal text
            assert ids("50%x") == [] and ids("item 1234") == ["c1234"]
            seen, cursor = [], None  # "item 3": 111 rows, all older than the probe's 500 rows: pages via the index
            for _ in range(5):
                page, cursor = list_jobs(c, "acme", 50, cursor, Filters(q="item 3"))
                seen += [job.id for _, job in page]
                if cursor is None:
                    break
            assert seen == sorted((f"c{i:04d}" for i in range(2600) if str(i).startswith("3")), reverse=True)
            newest = ids("processed", 5)  # a common text: the newest rows, in order
            assert newest == [f"c{i:04d}" for i in range(2599, 2594, -1)]
            assert ids("it") == [f"c{i:04d}" for i in range(2599, 2549, -1)]  # too short for trigrams: a scan
            if engines.is_sqlite(url):
                assert c.exec_driver_sql(f"SELECT count(*) FROM {text_search.FTS_TABLE}").scalar() == 2603
            else:  # one index, the tenant first (btree_gin), then both texts (pg_trgm)
                definition = c.exec_driver_sql("SELECT indexdef FROM pg_indexes WHERE indexname = %s",
                                               (text_search.TRGM_INDEX,)).scalar()
                assert "gin (tenant, message gin_trgm_ops, error gin_trgm_ops) WITH (fastupdate=off)" in definition, \
                    definition
        with engine.begin() as c:
            c.execute(sa.delete(jobs).where(jobs.c.id == "rare-old"))
        with engine.connect() as c:
            assert list_jobs(c, "acme", 50, None, Filters(q="zebra"))[0] == []
            if engines.is_sqlite(url):
                assert c.exec_driver_sql(f"SELECT count(*) FROM {text_search.FTS_TABLE}").scalar() == 2602
    finally:
        engine.dispose()


def test_a_q_page_through_the_index_passes_over_matches_its_other_filters_turn_down(url: str) -> None:
    """A text the newest rows of the range do not hold, held by thousands of newer rows of another type: the
    index's matches are read newest first in growing chunks (SQLite) until the page of the asked type is
    full, in order, and the cursor's next page goes on from there."""
    migrate.upgrade(url)
    engine = engines.create(url)
    base = 1_700_000_000.0
    rows = [Ended(ended_record(f"o{i:04d}", created_at=base + 10_000 + i, type="other", message=f"Processed item {i}"))
            for i in range(3000)]
    rows += [Ended(ended_record(f"n{i:04d}", created_at=base + 5_000 + i, message=f"Newer {i}")) for i in range(600)]
    rows += [Ended(ended_record(f"e{i:04d}", created_at=base + i, message=f"Processed item {i}")) for i in range(2000)]
    try:
        with engine.begin() as c:
            write_batch(c, rows)
        with engine.connect() as c:
            wanted = Filters(task_type="echo", q="ITEM")
            first, cursor = list_jobs(c, "acme", 50, None, wanted)
            assert [j.id for _, j in first] == [f"e{i:04d}" for i in range(1999, 1949, -1)]
            second, _ = list_jobs(c, "acme", 50, cursor, wanted)
            assert [j.id for _, j in second] == [f"e{i:04d}" for i in range(1949, 1899, -1)]
            none, cursor = list_jobs(c, "acme", 50, None, Filters(task_type="echo", q="item 4242"))
            assert (none, cursor) == ([], None)
    finally:
        engine.dispose()
