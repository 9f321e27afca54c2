"""Redis lets a job go once the store of record holds it (store/recorder.py ``let_go``,
AITASKS_RECORDED_KEEP_S), and the history switch (AITASKS_HISTORY_ENABLED): against a real redis-server,
real SQLite / PostgreSQL, and, for the API's answers, a real stack (API, worker, recorder)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from aitasks.jobs import keys
from aitasks.jobs.models import Job
from aitasks.jobs.store import JobStore
from aitasks.store import engine as engines
from aitasks.store import worker_hook
from aitasks.store.recorder import Recorder
from aitasks.store.schema import jobs
from aitasks.jobs.apikeys import create_key
from aitasks.jobs import storage_quota
from aitasks.jobs.artifacts import ArtifactStore, open_artifacts
from aitasks.jobs.storage_quota import Meter, MeteredArtifacts
from aitasks.service.redis_server import RedisServer
from aitasks.settings import Settings
from aitasks.worker import artifact_sweep, storage_recount
from aitasks.worker.artifact_sweep import files_kept
from pg_server import PgServer
from pictures import astronaut, b64, png
from stack import Stack, poll, sse_events, submit, wait_status
from store_db import BACKENDS, database_url, pg_lazy  # noqa: F401  (fixture)
from test_store_recorder import end_jobs


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path, pg_lazy: Callable[[], PgServer]) -> str:  # noqa: F811
    return database_url(request.param, tmp_path, pg_lazy)


def _ended(r: redis.Redis, job_id: str, **fields: str) -> None:
    """A job ended through the real UPDATE script, with extra record fields (a webhook, a parent...)."""
    r.hset(keys.job(job_id), mapping={**Job(id=job_id, type="echo", tenant="acme", queue="cpu").to_hash(), **fields})
    r.zadd(keys.tenant_index("acme"), {job_id: int(time.time() * 1000)})
    JobStore(r).update(job_id, {"status": "SUCCESS", "finished_at": time.time()}, ttl_s=3600)


def engines_row(url: str, job_id: str) -> sa.RowMapping:
    engine = engines.create(url)
    try:
        with engine.connect() as c:
            return c.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().one()
    finally:
        engine.dispose()


def _record_all(r: redis.Redis, url: str, keep_s: int | None) -> Recorder:
    recorder = Recorder(r, url, consumer="c1", batch=100, block_ms=100, keep_s=keep_s)
    recorder.prepare()
    while entries := recorder.take():
        recorder.write(entries)
    return recorder


def test_a_recorded_job_leaves_redis_and_its_index_but_jobs_others_read_stay(r: redis.Redis, url: str) -> None:
    plain = end_jobs(r, 3)
    for job_id in plain:
        r.zadd(keys.tenant_index("acme"), {job_id: int(time.time() * 1000)})
    _ended(r, "hooked", webhook="http://127.0.0.1:9/hook", webhook_events=",completed,")
    _ended(r, "child", parent="p1")
    _ended(r, "parent", children='["child"]')
    _ended(r, "doc-job", document=keys.document("acme", "d1"))
    _ended(r, "with-files", artifacts='[{"name": "a.png", "media_type": "image/png", "bytes": 3}]')
    recorder = _record_all(r, url, keep_s=0)
    try:
        assert recorder.recorded == 8
        # Its files outlive its Redis record: the file sweep keeps them for the job's retention.
        assert not r.exists(keys.job("with-files"))
        finished = float(engines_row(url, "with-files")["finished_at"])
        assert r.zscore(keys.JOBS_FILES_KEPT, "with-files") == pytest.approx(finished + 3600)
        assert files_kept(r, ["with-files", plain[0]]) == [True, False]  # the plain job had no files
        r.zadd(keys.JOBS_FILES_KEPT, {"with-files": time.time() - 1})  # its retention ended
        assert files_kept(r, ["with-files"]) == [False] and r.zcard(keys.JOBS_FILES_KEPT) == 0
        for job_id in plain:  # in SQL, gone from Redis: the record and its place in the tenant's index
            assert not r.exists(keys.job(job_id))
            assert r.zscore(keys.tenant_index("acme"), job_id) is None
        for job_id in ("hooked", "child", "parent", "doc-job"):  # read by deliveries, callbacks, documents
            assert 3000 < r.ttl(keys.job(job_id)) <= 3600, job_id
            assert r.zscore(keys.tenant_index("acme"), job_id) is not None
        engine = engines.create(url)
        with engine.connect() as c:
            assert c.scalar(sa.select(sa.func.count()).select_from(jobs)) == 8
        engine.dispose()
    finally:
        recorder.close()


def test_the_keep_time_only_ever_shortens_a_record_s_life(r: redis.Redis, url: str) -> None:
    kept = end_jobs(r, 2)
    r.expire(keys.job(kept[1]), 5)  # its own retention ends sooner than the keep time: left as it is
    recorder = _record_all(r, url, keep_s=30)
    try:
        assert 20 < r.ttl(keys.job(kept[0])) <= 30
        assert 0 < r.ttl(keys.job(kept[1])) <= 5
    finally:
        recorder.close()


def test_without_a_keep_time_redis_keeps_the_record_for_its_retention(r: redis.Redis, url: str) -> None:
    (job_id,) = end_jobs(r, 1)
    recorder = _record_all(r, url, keep_s=None)
    try:
        assert recorder.recorded == 1 and 3000 < r.ttl(keys.job(job_id)) <= 3600
    finally:
        recorder.close()


def test_with_history_off_a_job_ends_without_an_entry(r: redis.Redis) -> None:
    store = JobStore(r, history=False)
    r.hset(keys.job("quiet"), mapping=Job(id="quiet", type="echo", tenant="acme", queue="cpu").to_hash())
    assert store.update("quiet", {"status": "SUCCESS", "finished_at": time.time()}, ttl_s=60) > 0
    assert r.hget(keys.job("quiet"), "status") == "SUCCESS"
    assert r.xlen(keys.HISTORY_STREAM) == 0
    assert r.hget(keys.METRICS_JOBS, "echo|SUCCESS") == "1"  # the other fragments still ran


@pytest.mark.slow
def test_every_read_of_a_job_redis_let_go_answers_from_sql(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack({"AITASKS_RECORDED_KEEP_S": "0"})
    with stack.client() as c, stack.client() as stranger:
        body = {"task_type": "diagnostic", "parameters": {"steps": 2}, "image": b64(png(astronaut()[:64, :64]))}
        waited = c.post("/api/v1/tasks/submit/", json=body, headers={"Prefer": "wait=60", "Idempotency-Key": "k1"})
        assert waited.status_code == 200, waited.text
        task_id = waited.json()["task_id"]
        assert waited.json()["status"] == "SUCCESS"
        poll(lambda: not stack.redis.exists(keys.job(task_id)), "Redis to let the recorded job go", 60)

        status = wait_status(c, task_id)
        assert status["status"] == "SUCCESS" and status["progress"] == 100
        result = c.get(f"/api/v1/tasks/{task_id}/result/")
        assert result.status_code == 200 and result.json()["result"]["image_artifact"] == "thumbnail.png"
        thumb = c.get(f"/api/v1/tasks/{task_id}/artifacts/thumbnail.png")
        assert thumb.status_code == 200 and thumb.content.startswith(b"\x89PNG")
        events = list(sse_events(c, task_id))
        assert [e["status"] for e in events] == ["SUCCESS"]
        assert task_id in [t["task_id"] for t in c.get("/api/v1/tasks/").json()["tasks"]]
        cancel = c.post(f"/api/v1/tasks/{task_id}/cancel/")
        assert cancel.status_code == 400 and cancel.json()["status"] == "SUCCESS", cancel.text
        again = c.post("/api/v1/tasks/submit/", json=body, headers={"Idempotency-Key": "k1"})
        assert again.status_code == 200 and again.json()["task_id"] == task_id, again.text

        # Another tenant meets the same 404 as for an unknown id on every path.
        for path in (f"/api/v1/tasks/{task_id}/status/", f"/api/v1/tasks/{task_id}/result/",
                     f"/api/v1/tasks/{task_id}/artifacts/thumbnail.png", f"/api/v1/tasks/{task_id}/events"):
            assert stranger.get(path).status_code == 404, path
        assert stranger.post(f"/api/v1/tasks/{task_id}/cancel/").status_code == 404
        # A new job of the same client still runs (nothing else depends on the job's Redis copy).
        assert wait_status(c, submit(c, parameters={"steps": 1}))["status"] == "SUCCESS"
        # The recorder that wrote it is the cpu worker's niced child (it yields the CPUs to the jobs).
        worker = stack.workers["worker-cpu"]
        recorders = [pid for pid in subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True,
                                                   text=True).stdout.split() if int(pid) not in worker.children()]
        assert len(recorders) == 1, recorders
        nice = int(Path(f"/proc/{recorders[0]}/stat").read_text().rsplit(")", 1)[1].split()[16])
        assert nice == worker_hook.RECORDER_NICE, nice

        # Once the job is in neither store (its history swept), the key's next submit is a new job.
        url = stack.env().get("AITASKS_DATABASE_URL") or f"sqlite:///{stack.root / 'data' / 'aitasks.db'}"
        engine = engines.create(url)
        with engine.begin() as connection:
            assert connection.execute(sa.delete(jobs).where(jobs.c.id == task_id)).rowcount == 1
        engine.dispose()
        fresh = c.post("/api/v1/tasks/submit/", json=body, headers={"Idempotency-Key": "k1"})
        assert fresh.status_code == 202 and fresh.json()["task_id"] != task_id, fresh.text
        again = c.post("/api/v1/tasks/submit/", json=body, headers={"Idempotency-Key": "k1"})
        assert again.status_code == 200 and again.json()["task_id"] == fresh.json()["task_id"], again.text


def test_a_recorded_job_s_files_outlive_redis_losing_its_data(make_stack) -> None:  # type: ignore[no-untyped-def]
    """The artifact sweep (worker/artifact_sweep.py) asks SQL before removing the folder of a job Redis does not
    know: after a FLUSHALL, a recorded job's result file is still served for its retention, and one whose
    retention ended goes. The sweep runs here in-process, as the worker's monitor runs it, without the wait
    for its minute and the files' 2-minute age."""
    stack: Stack = make_stack({"AITASKS_AUTH_CACHE_S": "1"})
    url = stack.env().get("AITASKS_DATABASE_URL") or f"sqlite:///{stack.root / 'data' / 'aitasks.db'}"
    engine = engines.create(url)
    try:
        key = create_key(stack.redis, "files-tenant", "ops", db=engine)  # in SQL: it survives the FLUSHALL
        with stack.client(key) as c:
            body = {"task_type": "diagnostic", "image": b64(png(astronaut()[:64, :64]))}
            kept, old = (c.post("/api/v1/tasks/submit/", json=body, headers={"Prefer": "wait=60"}).json()["task_id"]
                         for _ in range(2))
            thumb = c.get(f"/api/v1/tasks/{kept}/artifacts/thumbnail.png")
            assert thumb.status_code == 200 and thumb.content.startswith(b"\x89PNG")

            def recorded() -> bool:
                with engine.connect() as connection:
                    return len(connection.execute(sa.select(jobs.c.id).where(jobs.c.id.in_([kept, old]))).all()) == 2

            poll(recorded, "both jobs recorded in SQL", 60)
            poll(lambda: stack.redis.exists(keys.STORAGE_COUNTED), "the worker's first sweep to mark the counts", 90)
            usage = c.get("/api/v1/limits").json()["usage"]
            kept_bytes = sum(p.stat().st_size for p in (stack.root / "data" / "artifacts" / kept).iterdir())
            old_bytes = sum(p.stat().st_size for p in (stack.root / "data" / "artifacts" / old).iterdir())
            assert usage["storage_bytes"] == kept_bytes + old_bytes  # each input and thumbnail, as written
            with engine.begin() as connection:  # `old` ended two hours ago: past its retention (3,600 s)
                connection.execute(sa.update(jobs).where(jobs.c.id == old).values(finished_at=time.time() - 7200))
            artifacts = open_artifacts(Settings(redis_url=stack.redis_server.url, data_dir=stack.root / "data"))
            folders = stack.root / "data" / "artifacts"
            assert (folders / kept).is_dir() and (folders / old).is_dir()

            stack.redis.flushall()

            # SQL unreachable: nothing is removed (the sweep stops; the monitor logs it and tries next minute).
            with pytest.raises(sa.exc.OperationalError):
                artifact_sweep.sweep(stack.redis, artifacts, "postgresql://aitasks@127.0.0.1:1/none", min_age_s=0)
            assert (folders / kept).is_dir() and (folders / old).is_dir()

            assert artifact_sweep.sweep(stack.redis, artifacts, url, min_age_s=0)[0] == 1
            assert (folders / kept).is_dir() and not (folders / old).exists()
            # Back in Redis's index until its end plus its retention: the next sweep needs no SQL for it.
            assert stack.redis.zscore(keys.JOBS_FILES_KEPT, kept) == pytest.approx(time.time() + 3600, abs=120)
            time.sleep(1.5)  # past the API's auth cache: the key is loaded again from SQL
            again = c.get(f"/api/v1/tasks/{kept}/artifacts/thumbnail.png")
            assert again.status_code == 200 and again.content == thumb.content
            assert c.get(f"/api/v1/tasks/{old}/artifacts/thumbnail.png").status_code == 404
            # The worker's monitor counts the kept job's files again (within its minute): the tenant's usage is
            # what it stores, not zero, so max_storage_mb still holds after the loss.
            poll(lambda: c.get("/api/v1/limits").json()["usage"]["storage_bytes"] == kept_bytes,
                 "the storage counters rebuilt by the worker", 90)
            assert stack.redis.exists(keys.STORAGE_COUNTED)

            # What kept it was SQL: a sweep that asks only Redis (history off) removes it once Redis forgot it.
            stack.redis.flushall()
            assert artifact_sweep.sweep(stack.redis, artifacts, None, min_age_s=0)[0] == 1
            assert not (folders / kept).exists()
    finally:
        engine.dispose()


def test_the_storage_recount_counts_each_kept_job_s_files_once(r: redis.Redis, url: str, tmp_path: Path) -> None:
    """worker/storage_recount.py after Redis lost the counters: a real Redis, a real folder store, SQL."""
    _ended(r, "recorded", artifacts='[{"name": "out.png", "media_type": "image/png", "bytes": 200}]')
    _ended(r, "expired", artifacts='[{"name": "x.png", "media_type": "image/png", "bytes": 70}]')
    _record_all(r, url, keep_s=0).close()  # both in SQL, gone from Redis
    engine = engines.create(url)
    with engine.begin() as connection:  # `expired` ended two hours ago: past its retention
        connection.execute(sa.update(jobs).where(jobs.c.id == "expired").values(finished_at=time.time() - 7200))
    engine.dispose()
    _ended(r, "live")  # still in Redis
    _ended(r, "theirs")
    r.delete(keys.JOBS_FILES_KEPT)  # the index lost with Redis's data
    store = ArtifactStore(tmp_path / "artifacts")
    sizes = {("live", "a.png"): 100, ("live", "b.png"): 50, ("recorded", "out.png"): 200, ("expired", "x.png"): 70,
             ("unknown", "y.png"): 30, ("theirs", "z.png"): 40}
    for (job_id, name), size in sizes.items():
        store.save(job_id, name, b"x" * size)
    (store.job_dir("live") / ".c.png.123.tmp").write_bytes(b"x" * 999)  # a write in progress
    store.save_file("acme", "upload-1", b"x" * 500)  # an upload: its record was Redis's only
    # Written after the loss: counted by its write, named in the hash.
    r.hset(keys.stored_object("job", "live"), mapping={"tenant": "acme", "n:a.png": "100"})
    r.set(keys.tenant_storage("acme"), 100)
    r.hset(keys.stored_object("job", "theirs"), mapping={"tenant": "beta", "n:q.png": "1"})  # names another tenant
    r.set(keys.tenant_storage("beta"), 1)

    assert storage_recount.recount(r, store, url) == (2, 250)  # live's b.png, recorded's out.png
    assert r.get(keys.tenant_storage("acme")) == "350" and r.get(keys.tenant_storage("beta")) == "1"
    assert r.hgetall(keys.stored_object("job", "recorded")) == {"tenant": "acme", "n:out.png": "200"}
    assert not r.exists(keys.stored_object("job", "expired")) and not r.exists(keys.stored_object("job", "unknown"))
    assert r.zscore(keys.JOBS_FILES_KEPT, "recorded") is not None  # SQL's answer back in the index
    assert storage_recount.recount(r, store, url) == (0, 0)  # run again: nothing counted twice
    # A job deleted while the recount ran (its record and index entry gone) is not counted back.
    r.delete(keys.stored_object("job", "recorded"), keys.job("recorded"))
    r.zrem(keys.JOBS_FILES_KEPT, "recorded")
    engine = engines.create(url)
    with engine.begin() as connection:
        connection.execute(sa.delete(jobs).where(jobs.c.id == "recorded"))
    engine.dispose()
    assert storage_recount.recount(r, store, url) == (0, 0)

    # Once, by one worker: the mark set, a second start does nothing while it is there.
    r.delete(keys.STORAGE_COUNTED)
    thread = storage_recount.start_if_lost(r, store, url, "w1")
    assert thread is not None
    thread.join(30)
    assert r.exists(keys.STORAGE_COUNTED) and not r.exists(keys.STORAGE_RECOUNT_LOCK)
    assert storage_recount.start_if_lost(r, store, url, "w1") is None


def test_files_stored_while_redis_was_away_are_counted_once_it_is_back(tmp_path: Path) -> None:
    """jobs/storage_quota.py: a write while Redis is unreachable is stored uncounted and a delete's bytes wait; the
    first write that reaches Redis again releases them and clears the counted mark, and the recount
    (worker/storage_recount.py) then counts what was stored meanwhile. A real redis-server, stopped and started
    again (its append-only file keeps the data)."""
    server = RedisServer(tmp_path / "redis").start()
    r = redis.Redis.from_url(server.url, decode_responses=True)
    meter = Meter(server.url, 0)
    try:
        r.hset(keys.job("j1"), mapping=Job(id="j1", type="echo", tenant="acme", queue="cpu").to_hash())
        r.set(keys.STORAGE_COUNTED, "1")
        store = MeteredArtifacts(ArtifactStore(tmp_path / "artifacts"), meter)
        store.save("j1", "a.png", b"x" * 10)
        store.save("j2", "a.png", b"x" * 7, tenant="acme")
        assert r.get(keys.tenant_storage("acme")) == "17"
        server.stop()
        store.save("j1", "b.png", b"x" * 20)  # stored, uncounted: no error for the job
        assert store.read("j1", "b.png") == b"x" * 20
        store.delete_job("j2")  # deleted; its 7 bytes wait in the process to be given back
        assert not (tmp_path / "artifacts" / "j2").exists()
        server.start()
        assert r.exists(keys.STORAGE_COUNTED) and r.get(keys.tenant_storage("acme")) == "17"
        time.sleep(storage_quota.AWAY_S + 0.1)  # past the meter's pause after a connection error
        store.save("j1", "c.png", b"x" * 5)  # reaches Redis: counted, j2 released, and the mark cleared
        assert r.get(keys.tenant_storage("acme")) == "15" and not r.exists(keys.STORAGE_COUNTED)
        assert not r.exists(keys.stored_object("job", "j2"))
        assert storage_recount.recount(r, store, None) == (1, 20)  # b.png, stored while Redis was away
        assert r.get(keys.tenant_storage("acme")) == "35"
    finally:
        r.close()
        meter.client.close()  # (their sockets, not left to the collector: a ResourceWarning fails the test)
        server.kill()
