"""No job is forgotten: the sweep (worker/sweep.py) queues again, fenced, an unfinished job that no queue,
no delivery and no live worker holds, and never doubles one that is merely queued; a stale copy of a
message (an older generation, or a finished job's) is acknowledged without running."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from aitasks.jobs import keys
from aitasks.jobs.messages import job_message
from aitasks.jobs.store import JobStore
from aitasks.worker import lease
from aitasks.worker.sweep import Recovery
from stack import Stack, poll, submit, wait_status


def unfinished(r: redis.Redis, job_id: str, age_s: float, **fields: Any) -> None:
    """A job record as CREATE leaves it, ``age_s`` old, in the index of unfinished jobs."""
    r.hset(keys.job(job_id), mapping={"id": job_id, "status": "PENDING", "type": "echo", "tenant": "acme",
                                      "queue": "cpu", "seq": "0", "soft_time_limit_s": "10", "time_limit_s": "20",
                                      **{k: str(v) for k, v in fields.items()}})
    r.zadd(keys.JOBS_LIVE, {job_id: (time.time() - age_s) * 1000})


def queued_ids(r: redis.Redis, queue: str = "cpu") -> list[str]:
    return [json.loads(m)["headers"]["id"] for m in r.lrange(queue, 0, -1)]


def test_the_sweep_requeues_what_nothing_holds_after_two_passes_and_nothing_else(r: redis.Redis) -> None:
    store = JobStore(r)
    unfinished(r, "lost", 60)                                     # its message is gone
    unfinished(r, "queued", 60)
    r.lpush("cpu", job_message("queued", "cpu", 10, 20))         # merely queued
    unfinished(r, "running", 60, status="PROCESSING")            # a live worker's lease names it
    unfinished(r, "parent", 60, status="PROCESSING", children_total=2, children_done=1)  # its children hold it
    unfinished(r, "young", 1)                                     # within the grace (between CREATE and broker)
    unfinished(r, "stalled", 60, status="PROCESSING")            # its worker's delivery is in unacked
    r.hset(keys.UNACKED, "tag-s", json.dumps([json.loads(job_message("stalled", "cpu", 10, 20)), "", "cpu"]))
    unfinished(r, "ended", 60, status="SUCCESS")                  # ended by a path that left its entry
    r.zadd(keys.JOBS_LIVE, {"expired": 0})                        # its record expired
    lease.renew(r, "w@host", ["running"], lease_s=30)
    sweeper = Recovery("sweeper@host", lease_s=5)

    def one_pass() -> int:
        return sweeper.sweep_orphans(r, store, lease.live_jobs(r))

    assert one_pass() == 0  # the first sighting is only a suspicion
    assert queued_ids(r) == ["queued"]
    assert set(r.zrange(keys.JOBS_LIVE, 0, -1)) == {"lost", "queued", "running", "parent", "young", "stalled"}
    assert one_pass() == 1  # seen orphaned twice, unchanged: queued again, at the consuming end
    assert queued_ids(r) == ["queued", "lost"]
    assert r.hget(keys.job("lost"), "generation") == "1" and r.hget(keys.job("lost"), "status") == "PENDING"
    for _ in range(3):
        assert one_pass() == 0  # once: now it is held by its queue
    assert queued_ids(r) == ["queued", "lost"]
    # A suspect whose record changed between the passes (it moved on) is not taken.
    unfinished(r, "moving", 60)
    one_pass()
    r.hincrby(keys.job("moving"), "seq", 1)
    assert one_pass() == 0 and "moving" not in queued_ids(r)
    assert sweeper.take_lock(r) and not Recovery("other@host", 5).take_lock(r)  # one sweeper at a time


# --- a real deployment -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_job_whose_message_was_lost_runs_once_and_stale_copies_are_acked_without_running(make_stack: Any):
    """The cpu worker parked; two cpu jobs accepted; one's message removed from the queue by hand (as a
    Redis that lost its last second would): the gpu worker's sweep queues it again (generation 1) and
    leaves the merely queued one alone. A restored copy of the lost job's first message (generation 0)
    is then pushed as kombu would: once the cpu worker is back, each job runs once, the stale copy is
    acked without running, and so is a restored copy of a job that already ended."""
    # Straight onto the queue list (no fair dispatch): the sweep's view of a queue list is what is tested; a
    # job waiting in its tenant's line is held by it (tests/test_fair_dispatch.py).
    stack: Stack = make_stack({"AITASKS_LEASE_S": "2", "AITASKS_FAIR_DISPATCH": "false"})
    rc = redis.Redis.from_url(stack.redis_server.url, decode_responses=True)
    with stack.client() as c:
        stack.workers["worker-cpu"].stop(signal.SIGTERM, 30)
        lost = submit(c, parameters={"duration_s": 0.2, "steps": 2})
        kept = submit(c, parameters={"duration_s": 0.2, "steps": 2})
        originals = {json.loads(m)["headers"]["id"]: m for m in rc.lrange("cpu", 0, -1)}
        assert set(originals) == {lost, kept}
        assert rc.lrem("cpu", 1, originals[lost]) == 1

        poll(lambda: rc.hget(keys.job(lost), "generation") == "1", "the sweep to queue the lost job", timeout_s=60)
        time.sleep(3)  # several more passes: nothing doubled
        assert sorted(queued_ids(rc)) == sorted([lost, kept])
        assert rc.hget(keys.job(kept), "generation") is None
        assert wait_status(c, lost, {"PENDING"})["status"] == "PENDING"

        restored = json.loads(originals[lost])
        restored["headers"]["redelivered"] = True
        rc.rpush("cpu", json.dumps(restored))  # kombu's restore of the first message: stale now
        worker = stack.start_worker("cpu")
        for task_id in (lost, kept):
            final = wait_status(c, task_id, timeout_s=60)
            assert final["status"] == "SUCCESS", f"{final}\n{stack.logs()}"
            assert rc.hget(keys.job(task_id), "deliveries") == "1"
        poll(lambda: rc.llen("cpu") == 0 and rc.hlen(keys.UNACKED) == 0, "the stale copy to be acked", timeout_s=30)
        assert "stale copy of its message" in Path(worker.log_path).read_text()

        # A finished job's message restored (kombu after its visibility timeout): acked without running.
        seq = rc.hget(keys.job(kept), "seq")
        rc.rpush("cpu", originals[kept])
        poll(lambda: rc.llen("cpu") == 0 and rc.hlen(keys.UNACKED) == 0, "the late copy to be acked", timeout_s=30)
        poll(lambda: "duplicate delivery dropped" in Path(worker.log_path).read_text(), "the drop", timeout_s=10)
        assert rc.hget(keys.job(kept), "seq") == seq and rc.hget(keys.job(kept), "deliveries") == "1"
        assert rc.hget(keys.METRICS_JOBS, "diagnostic|SUCCESS") == "2"
        assert rc.zcard(keys.JOBS_LIVE) == 0
    rc.close()
