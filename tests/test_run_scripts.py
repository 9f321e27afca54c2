"""A run's bookkeeping in two scripts (jobs/start.lua, jobs/run_update.lua, both wrapping the UPDATE
script) and its throttled progress writer (worker/progress.py), against a real redis-server."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis

from aitasks.errors import JobCancelled
from aitasks.jobs import keys
from aitasks.jobs.artifacts import ArtifactStore
from aitasks.jobs.models import Job
from aitasks.jobs.store import JobStore
from aitasks.worker.context import JobContext, JobFenced
from redis_events import drain, subscribed

CLAIM = {"status": "PROCESSING", "attempts": 1, "message": "Started", "error_type": "", "error_message": "",
         "worker": "w1", "stage": ""}


def record(r: redis.Redis, job_id: str, **fields: Any) -> None:
    base = {"id": job_id, "status": "PENDING", "type": "echo", "tenant": "acme", "queue": "cpu", "progress": "0",
            "message": "", "attempts": "0", "input": "{}", "created_at": "1.0"}
    r.hset(keys.job(job_id), mapping={**base, **{k: str(v) for k, v in fields.items()}})


def wait_for(check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not reached"
        time.sleep(0.01)


def test_start_claims_counts_and_reads_the_record_in_one_step(r: redis.Redis) -> None:
    record(r, "j", started_at="")
    store = JobStore(r)
    sub = subscribed(r, "j")
    started = store.start("j", 0, "tok", 3, 123.5, CLAIM)
    events = drain(sub)
    assert started.code == 1 and started.deliveries == 1
    assert started.job is not None and started.job.status.value == "PROCESSING" and started.job.started_at == 123.5
    assert started.job.deliveries == 1 and started.job.worker == "w1"
    assert r.hget(keys.job("j"), "run_token") == "tok"
    assert [e["status"] for e in events] == ["PROCESSING"]  # the UPDATE script's event, fragments and all
    # A second delivery while the first never ended (the broker gave the message again): the lost run is
    # said with a RETRY first, then the claim; it keeps the first start time and counts itself; the first
    # run is fenced out.
    sub = subscribed(r, "j")
    again = store.start("j", 0, "tok2", 3, 999.0, {**CLAIM, "attempts": 2})
    assert again.code == 3 and again.deliveries == 2 and again.job is not None and again.job.started_at == 123.5
    assert [(e["status"], e["seq"]) for e in drain(sub)] == [("RETRY", 2), ("PROCESSING", 3)]
    assert store.run_update("j", {"progress": 5}, "run:tok") == (-2, False)
    # A delivery after a run that ended its delivery (a retry's next attempt) claims without a RETRY of its own.
    assert store.run_update("j", {"status": "RETRY", "message": "again"}, "run:tok2", end_delivery=True)[0] == 4
    sub = subscribed(r, "j")
    third = store.start("j", 0, "tok3", 3, 999.0, {**CLAIM, "attempts": 3})
    assert third.code == 5 and [e["status"] for e in drain(sub)] == ["PROCESSING"]


def test_start_refuses_unknown_finished_and_stale_deliveries_without_counting_them(r: redis.Redis) -> None:
    store = JobStore(r)
    assert store.start("ghost", 0, "t", 3, 1.0, CLAIM).code == 0
    assert not r.exists(keys.job("ghost"))
    record(r, "done", status="SUCCESS")
    assert store.start("done", 0, "t", 3, 1.0, CLAIM).code == -1
    record(r, "requeued", generation=2)
    assert store.start("requeued", 1, "t", 3, 1.0, CLAIM).code == -2  # an older copy of its message
    for job_id in ("done", "requeued"):
        assert r.hget(keys.job(job_id), "deliveries") is None and r.hget(keys.job(job_id), "run_token") is None
    record(r, "parent", generation=1, children_total=2)  # a parent's callback message carries generation 0
    assert store.start("parent", 0, "cb", 3, 1.0, CLAIM).code > 0


def test_start_leaves_a_cancelled_job_and_a_poison_job_to_the_runner(r: redis.Redis) -> None:
    store = JobStore(r)
    record(r, "c", cancel_requested_at=5.0)
    cancelled = store.start("c", 0, "t", 3, 1.0, CLAIM)
    assert cancelled.code == -3 and cancelled.job is not None and cancelled.job.cancel_requested_at == 5.0
    assert r.hget(keys.job("c"), "status") == "PENDING" and r.hget(keys.job("c"), "deliveries") is None
    record(r, "p", deliveries=4, finished_deliveries=0)  # its worker died under it four times
    poison = store.start("p", 0, "t", 3, 1.0, CLAIM)
    assert poison.code == -4 and poison.deliveries == 5 and poison.job is not None
    assert r.hget(keys.job("p"), "status") == "PENDING" and r.hget(keys.job("p"), "run_token") is None


def test_run_update_ends_the_delivery_with_the_end_and_answers_the_cancel_flag(r: redis.Redis) -> None:
    store = JobStore(r)
    record(r, "j")
    store.start("j", 0, "tok", 3, 1.0, CLAIM)
    assert store.run_update("j", {"progress": 40, "message": "half"}, "run:tok") == (2, False)
    r.hset(keys.job("j"), "cancel_requested_at", "7.0")
    assert store.run_update("j", {"status": "REVOKED"}, "run:tok", ttl_s=60, end_delivery=True) == (3, True)
    h = r.hgetall(keys.job("j"))
    assert (h["status"], h["deliveries"], h["finished_deliveries"]) == ("REVOKED", "1", "1")
    assert 0 < r.ttl(keys.job("j")) <= 60
    assert r.hget(keys.METRICS_JOBS, "echo|REVOKED") == "1"  # the terminal fragments ran
    # A late write is refused; its delivery still ends. An expired record is not brought back.
    assert store.run_update("j", {"status": "SUCCESS"}, "run:tok", end_delivery=True)[0] == -1
    assert r.hget(keys.job("j"), "finished_deliveries") == "2"
    assert store.run_update("gone", {"status": "SUCCESS"}, "run:x", end_delivery=True) == (0, False)
    assert not r.exists(keys.job("gone"))


def context(r: redis.Redis, tmp_path: Path, job_id: str, last_write: float) -> JobContext:
    store = JobStore(r)
    record(r, job_id)
    started = store.start(job_id, 0, "tok", 3, 1.0, CLAIM)
    assert started.job is not None
    return JobContext(started.job, store, ArtifactStore(tmp_path), attempt=1, delivery=1, fence="run:tok",
                      last_write=last_write)


def test_a_report_held_back_is_written_by_the_flushing_thread_or_handed_to_the_end(r: redis.Redis,
                                                                                   tmp_path: Path) -> None:
    ctx = context(r, tmp_path, "held", last_write=time.monotonic())
    ctx.progress(30, "decoded", stage="decode")  # within the interval after the claim: held back
    assert r.hget(keys.job("held"), "message") == "Started"
    wait_for(lambda: r.hget(keys.job("held"), "message") == "decoded")  # written once due
    assert r.hget(keys.job("held"), "stage") == "decode"
    ctx.progress(60, "processed", stage="process")
    assert ctx.end_progress() == {"stage": "process"}  # never written: the end write records its stage
    ctx.close()
    assert r.hget(keys.job("held"), "message") == "decoded"

    quick = context(r, tmp_path, "due", last_write=0.0)  # due at once: written in the job's thread
    quick.progress(10, "now")
    assert r.hget(keys.job("due"), "message") == "now"
    assert quick.end_progress() == {}
    quick.close()


def test_a_background_write_that_finds_the_job_cancelled_or_taken_stops_the_job(r: redis.Redis,
                                                                                 tmp_path: Path) -> None:
    ctx = context(r, tmp_path, "cancel", last_write=time.monotonic())
    r.hset(keys.job("cancel"), "cancel_requested_at", "9.0")
    ctx.progress(20, "working")
    wait_for(lambda: r.hget(keys.job("cancel"), "message") == "working")
    with pytest.raises(JobCancelled):
        ctx.progress(30, "more")
    ctx.close()

    taken = context(r, tmp_path, "taken", last_write=time.monotonic())
    r.hset(keys.job("taken"), "run_token", "newer-run")  # the recovery queued it again meanwhile
    taken.progress(20, "working")
    wait_for(lambda: taken._writer.fenced)
    with pytest.raises(JobFenced):
        taken.check_cancel()
    taken.close()
    assert r.hget(keys.job("taken"), "message") == "Started"


def test_job_from_a_started_record_round_trips(r: redis.Redis) -> None:
    record(r, "x", input='{"a": 1}', retention_s=77)
    started = JobStore(r).start("x", 0, "t", 3, 1.0, CLAIM)
    assert isinstance(started.job, Job) and started.job.input == {"a": 1} and started.job.retention_s == 77


def test_a_write_fenced_by_generation_is_refused_once_the_recovery_queued_the_job_again(r: redis.Redis) -> None:
    """The worker's main process writes for a delivery whose run cannot carry its token (its pool process
    died, or the hard time limit killed it): 'gen:<n>' applies while the record's generation is the
    message's, never on the run that took over after the recovery bumped it, and no run token is set."""
    store = JobStore(r)
    record(r, "g", status="PROCESSING", run_token="old")
    assert store.update("g", {"status": "RETRY", "message": "lost"}, fence="gen:0") > 0
    assert r.hget(keys.job("g"), "run_token") == "old"
    r.hset(keys.job("g"), mapping={"generation": "1", "status": "PROCESSING", "run_token": "new"})
    assert store.update("g", {"status": "RETRY", "message": "lost"}, fence="gen:0") == -2
    assert store.update("g", {"status": "FAILURE", "finished_at": 2.0}, fence="gen:0") == -2
    assert r.hget(keys.job("g"), "status") == "PROCESSING"
    assert store.update("g", {"progress": 50}, fence="gen:1") > 0
    # A parent's callback message (generation 0) still writes once its children exist, as its claim may.
    record(r, "p", status="PROCESSING", generation="2", children_total="3")
    assert store.update("p", {"status": "RETRY"}, fence="gen:0") > 0
