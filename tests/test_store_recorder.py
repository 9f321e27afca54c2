"""The durable hand-off of ended jobs (store/history_end.lua) and the recorder (store/recorder.py) against
a real redis-server and a real database: the entry is written in the job's atomic end, the recorder
writes each job once and acknowledges only after the commit, a recorder SIGKILLed mid-batch loses
nothing and writes nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis
import sqlalchemy as sa

from aitasks.jobs import keys
from aitasks.jobs.models import Job
from aitasks.jobs.store import JobStore
from aitasks.service.redis_server import RedisServer
from aitasks.store import engine as engines
from aitasks.store import migrate
from aitasks.store.recorder import Recorder
from aitasks.store.schema import documents, jobs, usage, webhook_deliveries
from pg_server import PgServer
from store_db import BACKENDS, database_url, pg_lazy  # noqa: F401  (fixture)
from stack import poll


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path, pg_lazy: Callable[[], PgServer]) -> str:  # noqa: F811
    return database_url(request.param, tmp_path, pg_lazy)


def end_jobs(r: redis.Redis, n: int, tenant: str = "acme", start: int = 0) -> list[str]:
    """``n`` jobs created and ended through the real UPDATE script (the path every job's end takes)."""
    store = JobStore(r)
    ids = [f"job-{tenant}-{i:05d}" for i in range(start, start + n)]
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hset(keys.job(job_id), mapping=Job(id=job_id, type="echo", tenant=tenant, queue="cpu").to_hash())
    pipe.execute()
    now = time.time()
    for job_id in ids:
        assert store.update(job_id, {"status": "PROCESSING", "started_at": now}) > 0
        assert store.update(job_id, {"status": "SUCCESS", "finished_at": now + 1, "progress": 100,
                                     "result": {"ok": True}}, ttl_s=3600) > 0
    return ids


def count(url: str, table: sa.Table = jobs) -> int:
    engine = engines.create(url)
    try:
        with engine.connect() as c:
            return int(c.execute(sa.select(sa.func.count()).select_from(table)).scalar() or 0)
    except sa.exc.OperationalError:
        return 0  # not migrated yet
    finally:
        engine.dispose()


def test_only_the_change_that_ends_a_job_writes_an_entry_with_its_whole_record(r: redis.Redis) -> None:
    store = JobStore(r)
    doc_key = keys.document("acme", "d1")
    r.hset(doc_key, mapping={"document_id": "d1", "status": "PROCESSING", "filename": "a.pdf"})
    r.hset(keys.job("j1"), mapping={**Job(id="j1", type="echo", tenant="acme", queue="cpu").to_hash(),
                                    "document": doc_key})
    store.update("j1", {"status": "PROCESSING", "progress": 10})
    store.update("j1", {"progress": 50, "message": "half"})
    assert r.xlen(keys.HISTORY_STREAM) == 0
    store.update("j1", {"status": "FAILURE", "error_type": "ValueError", "error_message": "no", "finished_at": 5.0})
    assert store.update("j1", {"status": "SUCCESS"}) == -1  # ended: refused, and no second entry
    (entry_id, fields), = r.xrange(keys.HISTORY_STREAM)
    assert fields["id"] == "j1" and fields["status"] == "FAILURE" and fields["error_message"] == "no"
    assert fields["tenant"] == "acme" and fields["message"] == "half"
    assert '"d1"' in fields["__document"]


def test_the_recorder_writes_each_job_once_and_then_frees_the_stream(r: redis.Redis, url: str) -> None:
    ids = end_jobs(r, 120)
    recorder = Recorder(r, url, consumer="c1", batch=50, block_ms=100)
    recorder.prepare()
    while r.xlen(keys.HISTORY_STREAM):
        recorder.write(recorder.take())
    assert recorder.recorded == 120 and count(url) == 120
    assert r.xpending(keys.HISTORY_STREAM, keys.HISTORY_GROUP)["pending"] == 0
    end_jobs(r, 1, start=500)
    recorder.write(recorder.take())
    assert count(url) == 121
    recorder.close()
    engine = engines.create(url)
    with engine.connect() as c:
        assert set(c.execute(sa.select(jobs.c.id)).scalars()) >= set(ids)
        assert c.execute(sa.select(sa.func.sum(usage.c.jobs))).scalar() == 121
    engine.dispose()


def test_webhook_delivery_attempts_are_recorded_once_and_read_back_as_the_log(r: redis.Redis, url: str) -> None:
    from aitasks.store.records import get_deliveries

    attempts = [{"event": "completed", "attempt": 1, "at": "2026-12-06T10:00:00.000Z", "status_code": 503,
                 "delivered": False, "retry_in_s": 1},
                {"event": "completed", "attempt": 2, "at": "2026-12-06T10:00:01.000Z", "error": "ConnectTimeout: x",
                 "delivered": False},
                {"event": "completed", "attempt": 3, "at": "2026-12-06T10:00:03.000Z", "status_code": 204,
                 "delivered": True}]
    for entry in attempts:  # as worker/webhooks.py hands them over
        r.xadd(keys.HISTORY_STREAM, {"__webhook": orjson.dumps({**entry, "job_id": "j1", "tenant": "acme"})})
    r.xadd(keys.HISTORY_STREAM, {"__webhook": "not json"})  # a broken entry is dropped, not retried for ever
    recorder = Recorder(r, url, consumer="c1", batch=10, block_ms=100)
    recorder.prepare()
    taken = recorder.take()
    recorder.write(taken)
    recorder.write(taken)  # the same batch again (a recorder that died before its ack): nothing twice
    assert count(url, webhook_deliveries) == 3 and r.xlen(keys.HISTORY_STREAM) == 0
    assert recorder.engine is not None
    with recorder.engine.connect() as c:
        log = get_deliveries(c, "acme", "j1")
        assert get_deliveries(c, "other", "j1") == []  # the tenant's own only
    recorder.close()
    assert log == [{k: v for k, v in e.items() if k != "retry_in_s"} for e in attempts]


def test_an_entry_taken_by_a_recorder_that_died_is_claimed_and_written_once(r: redis.Redis, url: str) -> None:
    end_jobs(r, 10)
    dead = Recorder(r, url, consumer="dead", batch=10, block_ms=100, claim_idle_s=0.2)
    dead.prepare()
    taken = dead.take()
    with dead.engine.begin() as c:  # type: ignore[union-attr]  # it wrote, then died before acknowledging
        from aitasks.store.records import write_batch
        from aitasks.store.recorder import ended

        write_batch(c, [ended(f) for _, f in taken if f])
    dead.close()
    assert r.xpending(keys.HISTORY_STREAM, keys.HISTORY_GROUP)["pending"] == 10
    heir = Recorder(r, url, consumer="heir", batch=10, block_ms=100, claim_idle_s=0.2)
    heir.prepare()
    time.sleep(0.3)
    claimed = heir.take()
    assert sorted(i for i, _ in claimed) == sorted(i for i, _ in taken)
    heir.write(claimed)
    heir.close()
    assert r.xpending(keys.HISTORY_STREAM, keys.HISTORY_GROUP)["pending"] == 0 and r.xlen(keys.HISTORY_STREAM) == 0
    assert count(url) == 10 and heir.recorded == 0  # already there: nothing written twice
    engine = engines.create(url)
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.sum(usage.c.jobs))).scalar() == 10
        assert c.execute(sa.select(sa.func.count()).select_from(documents)).scalar() == 0
    engine.dispose()


def _recorder_process(server: RedisServer, url: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AITASKS_")},
           "AITASKS_REDIS_URL": server.url, "AITASKS_DATABASE_URL": url, "AITASKS_RECORDER_BATCH": "25",
           "AITASKS_RECORDER_CLAIM_IDLE_S": "1", "AITASKS_DATA_DIR": str(tmp_path / "data")}
    with open(tmp_path / "recorder.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "aitasks.store.recorder"], env=env, stdout=log,
                                stderr=log, start_new_session=True)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def test_a_recorder_sigkilled_mid_batch_leaves_every_job_in_sql_exactly_once(
        server: RedisServer, r: redis.Redis, backend: str, tmp_path: Path,
        pg_lazy: Callable[[], PgServer]) -> None:  # noqa: F811
    url = database_url(backend, tmp_path, pg_lazy)
    migrate.upgrade(url)
    n = 3000
    end_jobs(r, n)
    victim = _recorder_process(server, url, tmp_path)
    try:
        poll(lambda: count(url) >= 200, "the recorder to write some batches", timeout_s=120, interval_s=0.01)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
    finally:
        if victim.poll() is None:
            victim.kill()
    written = count(url)
    assert written < n, "the recorder finished before it was killed: nothing was tested"
    heir = _recorder_process(server, url, tmp_path)
    try:
        poll(lambda: count(url) == n and r.xlen(keys.HISTORY_STREAM) == 0
             and r.xpending(keys.HISTORY_STREAM, keys.HISTORY_GROUP)["pending"] == 0,
             "every job recorded and the stream emptied", timeout_s=180, interval_s=0.2)
    finally:
        heir.send_signal(signal.SIGTERM)
        heir.wait(20)
    engine = engines.create(url)
    with engine.connect() as c:
        assert c.execute(sa.select(sa.func.count(sa.distinct(jobs.c.id)))).scalar() == n
        assert c.execute(sa.select(sa.func.sum(usage.c.jobs))).scalar() == n  # no batch counted twice
    engine.dispose()
