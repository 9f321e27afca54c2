"""Recovery by lease, in seconds: a worker (or its whole host) that stops heartbeating for AITASKS_LEASE_S
loses its jobs to a live worker, and the late original is fenced (worker/lease.py, worker/sweep.py, the
fence in jobs/end_state.lua).

The first tests drive the scripts against a real redis-server; the last ones SIGKILL or SIGSTOP every
process of a real worker while a second one is alive."""

from __future__ import annotations

import json
import os
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
from redis_events import drain, drain_job, every_job_subscribed, states, subscribed
from stack import Process, Stack, poll, submit, wait_status

LEASE_S = 5


def record(r: redis.Redis, job_id: str, **fields: Any) -> None:
    base = {"id": job_id, "status": "PENDING", "type": "echo", "tenant": "acme", "queue": "cpu", "progress": "0",
            "message": "", "attempts": "0", "soft_time_limit_s": "10", "time_limit_s": "20"}
    r.hset(keys.job(job_id), mapping={**base, **{k: str(v) for k, v in fields.items()}})


def delivered(r: redis.Redis, job_id: str, tag: str, ago_s: float, queue: str = "cpu") -> dict[str, Any]:
    """The job's message in kombu's unacked hash, as a worker that took it ``ago_s`` ago left it."""
    message = json.loads(job_message(job_id, queue, 10, 20))
    r.hset(keys.UNACKED, tag, json.dumps([message, "", queue]))
    r.zadd(keys.UNACKED_INDEX, {tag: time.time() - ago_s})
    return message


def generation_of(raw: str) -> int:
    import base64

    return int(json.loads(base64.b64decode(json.loads(raw)["body"]))[1].get("generation", 0))


# --- the fence, in the UPDATE script ------------------------------------------------------------------


def test_a_stale_runs_writes_are_refused_and_only_the_current_generation_may_claim(r: redis.Redis) -> None:
    store = JobStore(r)
    record(r, "f")
    assert store.update("f", {"status": "PROCESSING"}, fence="claim:0:first") == 1
    assert r.hget(keys.job("f"), "run_token") == "first"
    # The recovery takes the job back: generation 1, a new token; the first run is now stale.
    message = delivered(r, "f", "tag-f", ago_s=60)
    assert lease.requeue(r, store, "f", "taken back", message=message, queue="cpu", tag="tag-f")
    assert r.hget(keys.job("f"), "generation") == "1" and not r.hexists(keys.UNACKED, "tag-f")
    assert generation_of(r.lindex("cpu", -1)) == 1  # pushed at the consuming end, with its generation
    ps = subscribed(r, "f")
    seq = r.hget(keys.job("f"), "seq")
    for fence in ("run:first", "claim:0:again"):  # the late original, and an older copy of the message
        assert store.update("f", {"status": "SUCCESS", "result": "{}"}, ttl_s=60, fence=fence) == -2
    assert r.hget(keys.job("f"), "seq") == seq and r.hget(keys.job("f"), "status") == "RETRY"
    assert not r.exists(keys.METRICS_JOBS) and drain(ps) == []  # no end counted, no event
    assert store.update("f", {"status": "PROCESSING"}, fence="claim:1:second") > 0
    assert store.update("f", {"status": "SUCCESS"}, ttl_s=60, fence="run:second") > 0
    assert r.hget(keys.METRICS_JOBS, "echo|SUCCESS") == "1"
    assert not r.zscore(keys.JOBS_LIVE, "f")
    # A parent's callback message (generation 0) may claim once its children exist.
    record(r, "p", generation=2, children_total=1, children_done=1)
    assert store.update("p", {"status": "PROCESSING"}, fence="claim:0:callback") > 0
    assert store.update("p", {"message": "unfenced writers (cancel, monitor) still write"}) > 0


class ClaimsOnPush(redis.Redis):
    """The recovery's client, with an idle survivor on the other side: the moment the job's message is on its
    list, the survivor takes it and claims the job (START, as a worker's delivery does), before the recovery's
    next command. A state the recovery wrote after queueing the message would come too late."""

    job_id = queue = ""
    survivor: JobStore
    claimed: int | None = None  # the survivor's START answer

    @classmethod
    def to(cls, url: str, job_id: str, queue: str) -> ClaimsOnPush:
        client = cls.from_url(url, decode_responses=True)
        client.job_id, client.queue = job_id, queue
        client.survivor = JobStore(redis.Redis.from_url(url, decode_responses=True))
        return client

    def execute_command(self, *args: Any, **options: Any) -> Any:
        out = super().execute_command(*args, **options)
        if self.claimed is None and (raw := self.survivor.r.rpop(self.queue)) is not None:
            self.claimed = self.survivor.start(self.job_id, generation_of(raw), "survivor", 3, time.time(),
                                               {"status": "PROCESSING", "message": "Running again"}).code
        return out


@pytest.mark.parametrize(("taken_back", "outbox", "history"), [
    ("delivery", False, True), ("orphan", False, True), ("delivery", True, False), ("orphan", True, True)])
def test_a_job_taken_back_is_retry_before_any_worker_can_claim_it(
        r: redis.Redis, server: Any, taken_back: str, outbox: bool, history: bool) -> None:
    """An idle survivor claims the job as soon as its message is queued again (the lease's recovery of a
    delivery, or the orphan sweep; the queue's list, or RabbitMQ's outbox): the RETRY is written in the same
    step, so the job's events go PROCESSING, RETRY, PROCESSING, SUCCESS, and the stale run is still refused."""
    record(r, "k", queue="cpu")
    ps = subscribed(r, "k")
    assert JobStore(r).update("k", {"status": "PROCESSING"}, fence="claim:0:first") > 0
    recovery = ClaimsOnPush.to(server.url, "k", keys.queue_list("cpu", outbox))
    store = JobStore(recovery, history=history, outbox=outbox)
    if taken_back == "delivery":
        message = delivered(r, "k", "tag-k", ago_s=60)
        assert lease.requeue(recovery, store, "k", "taken back", message=message, queue="cpu", tag="tag-k")
    else:
        assert lease.requeue(recovery, store, "k", "taken back")
    assert recovery.claimed is not None and recovery.claimed > 0  # the survivor holds the job
    job = r.hgetall(keys.job("k"))
    assert (job["status"], job["generation"], job["run_token"]) == ("PROCESSING", "1", "survivor"), job
    assert store.update("k", {"status": "SUCCESS"}, ttl_s=60, fence="run:first") == -2  # the stale run
    assert store.run_update("k", {"status": "SUCCESS"}, "run:survivor", ttl_s=60, end_delivery=True)[0] > 0
    events = drain(ps)
    assert [e["status"] for e in events] == ["PROCESSING", "RETRY", "PROCESSING", "SUCCESS"], events
    assert events[1]["message"] == "taken back"
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    recovery.survivor.r.close()
    recovery.close()


def test_recovery_takes_back_only_deliveries_no_live_lease_holds(r: redis.Redis) -> None:
    store = JobStore(r)
    record(r, "dead", status="PROCESSING", run_token="t1")
    record(r, "held", status="PROCESSING", run_token="t2")
    record(r, "young", status="PENDING")
    record(r, "done", status="SUCCESS")
    for job_id in ("dead", "held", "done"):
        delivered(r, job_id, f"tag-{job_id}", ago_s=60)
    delivered(r, "young", "tag-young", ago_s=1)  # taken a moment ago: its worker may not have beaten yet
    lease.renew(r, "alive@host", ["held"], lease_s=30)
    lease.renew(r, "gone@host", ["dead"], lease_s=0.001)
    time.sleep(0.05)
    live = lease.live_jobs(r)
    assert live == {"held"}
    assert lease.recover_unacked(r, store, live, lease_s=30) == 1
    assert [json.loads(m)["headers"]["id"] for m in r.lrange("cpu", 0, -1)] == ["dead"]
    assert set(r.hkeys(keys.UNACKED)) == {"tag-held", "tag-young"}  # the finished job's leftover: dropped
    job = r.hgetall(keys.job("dead"))
    assert job["status"] == "RETRY" and job["generation"] == "1" and "heartbeating" in job["message"], job
    assert lease.recover_unacked(r, store, live, lease_s=30) == 0  # once


# --- a real deployment: two workers on one queue --------------------------------------------------


def two_workers(make_stack: Any, **env: str) -> Stack:
    stack: Stack = make_stack({"AITASKS_LEASE_S": str(LEASE_S), **env})  # (readiness wants a gpu worker too)
    stack.start_worker("cpu", name="worker-cpu-2")
    poll(lambda: stack.redis.zcard(keys.LEASES) >= 3, "every worker's lease", timeout_s=60)
    return stack


def holder(stack: Stack, task_id: str) -> Process:
    """The worker process whose run holds the job (its Celery node name carries the main process's pid)."""
    name = poll(lambda: stack.redis.hget(keys.job(task_id), "worker"), "the job's worker").decode()
    pid = int(name.split("@")[0].rsplit(".", 1)[1])
    return next(p for p in stack.workers.values() if p.pid == pid)


def raw_record(stack: Stack, task_id: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in stack.redis.hgetall(keys.job(task_id)).items()}


def succeeded_total(stack: Stack) -> int:
    return int(stack.redis.hget(keys.METRICS_JOBS, "diagnostic|SUCCESS") or 0)


@pytest.mark.slow
def test_a_sigkilled_worker_host_loses_its_job_to_the_live_worker_in_seconds(make_stack: Any) -> None:
    """Main process and pool process of the worker running a job SIGKILLed together (a lost host): the
    other worker takes the job once the lease expires, long before kombu's visibility timeout, and it
    ends SUCCESS once, the lost delivery counted as a worker loss (not a failed attempt)."""
    stack = two_workers(make_stack)
    with stack.client() as c:
        task_id = submit(c, parameters={"duration_s": 4, "steps": 8})
        wait_status(c, task_id, {"PROCESSING"})
        victim = holder(stack, task_id)
        killed_at = time.monotonic()
        victim.kill_group()
        final = wait_status(c, task_id, timeout_s=60)
        took = time.monotonic() - killed_at
        assert final["status"] == "SUCCESS", f"{final}\n{stack.logs()}"
        assert took < 60, took  # generous bound; kombu alone would take the 960 s visibility timeout
        rec = raw_record(stack, task_id)
        assert holder(stack, task_id) is not victim
        assert (rec["deliveries"], rec["finished_deliveries"], rec["attempts"], rec["generation"]) == \
            ("2", "1", "1", "1"), rec
        result = c.get(f"/api/v1/tasks/{task_id}/result/").json()["result"]
        assert result["deliveries"] == 2 and result["attempts"] == 1, result
        assert succeeded_total(stack) == 1
        assert stack.redis.hlen(keys.UNACKED) == 0 and not stack.redis.zscore(keys.JOBS_LIVE, task_id)


@pytest.mark.slow
@pytest.mark.parametrize("fair", ["true", "false"])
def test_a_job_lost_with_its_worker_is_seen_retry_before_the_idle_survivor_runs_it(make_stack: Any, fair: str) -> None:
    """The worker running a job SIGKILLed (main and pool) while the other one idles on the queue, with fair
    dispatch and without: the job's events, heard from before it started, go PROCESSING (progress), RETRY,
    PROCESSING, SUCCESS: the survivor cannot take the job back before its RETRY is written (worker/requeue.lua)."""
    stack = two_workers(make_stack, AITASKS_FAIR_DISPATCH=fair)
    r = stack.redis  # kept: a client let go closes its connections, the subscription's too
    ps = every_job_subscribed(r)
    with stack.client() as c:
        task_id = submit(c, parameters={"duration_s": 3, "steps": 6})
        wait_status(c, task_id, {"PROCESSING"})
        victim = holder(stack, task_id)
        victim.kill_group()
        final = wait_status(c, task_id, timeout_s=60)
        assert final["status"] == "SUCCESS", f"{final}\n{stack.logs()}"
        assert holder(stack, task_id) is not victim
    events = drain_job(ps, task_id)
    assert states(events) == ["PROCESSING", "RETRY", "PROCESSING", "SUCCESS"], events
    assert "heartbeating" in next(e for e in events if e["status"] == "RETRY")["message"], events
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events), events


@pytest.mark.slow
def test_a_stopped_worker_that_comes_back_after_its_lease_is_fenced(make_stack: Any) -> None:
    """The worker running a job SIGSTOPped (main and pool) past its lease: the other worker takes the job.
    SIGCONT while the new run works: the late original's writes are refused, it stops, and the job ends
    once, with one terminal event and the new run's result."""
    stack = two_workers(make_stack)
    with stack.client() as c:
        task_id = submit(c, parameters={"duration_s": 14, "steps": 28})
        wait_status(c, task_id, {"PROCESSING"})
        poll(lambda: c.get(f"/api/v1/tasks/{task_id}/status/").json()["progress"] > 0, "progress")
        victim = holder(stack, task_id)
        ps = stack.redis.pubsub()
        ps.subscribe(keys.events(task_id))
        os.killpg(victim.pid, signal.SIGSTOP)
        try:
            poll(lambda: raw_record(stack, task_id).get("generation") == "1" and
                 raw_record(stack, task_id).get("status") == "PROCESSING", "the job to run elsewhere", timeout_s=60)
        finally:
            os.killpg(victim.pid, signal.SIGCONT)
        assert holder(stack, task_id) is not victim
        final = wait_status(c, task_id, timeout_s=60)
        assert final["status"] == "SUCCESS", f"{final}\n{stack.logs()}"
        poll(lambda: "lost the job" in Path(victim.log_path).read_text(), "the stale run to stop", timeout_s=30)
        time.sleep(1.0)  # room for any late write the stale worker might still make
        events = []
        while (m := ps.get_message(timeout=0.5)) is not None:
            if m["type"] == "message":
                events.append(json.loads(m["data"]))
        ps.close()
        assert [e["status"] for e in events if e["status"] in ("SUCCESS", "FAILURE", "REVOKED")] == ["SUCCESS"]
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and events[-1]["status"] == "SUCCESS", events
        result = c.get(f"/api/v1/tasks/{task_id}/result/").json()["result"]
        assert result["worker_pid"] not in victim.children(), result
        assert succeeded_total(stack) == 1
        assert victim.alive()  # it serves again
        again = submit(c, parameters={"duration_s": 0.1})
        assert wait_status(c, again, timeout_s=60)["status"] == "SUCCESS"
