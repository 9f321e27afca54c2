"""Fair dispatch across tenants (issue 18): per-tenant lines handed to Celery as worker slots free up,
round robin by weight, priorities within a tenant, max_running held through a SIGKILLed worker, the
dispatcher killed mid-move, and the pending limit ending a job FAILURE. Real Redis, API and workers.

The scripts themselves (jobs/dispatch_lib.lua) are tested against a real Redis first, then the
deployment: a stack's workers run one job at a time each (concurrency 1), so the order jobs start in
is the order the dispatcher handed them over."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aredis

from aitasks.jobs import keys
from aitasks.jobs.dispatch import queue_position
from aitasks.jobs.messages import job_message
from aitasks.jobs.models import Job
from aitasks.jobs.store import AsyncJobStore, JobStore
from aitasks.processors.diagnostic import LEDGER_ENV
from aitasks.worker.dispatcher import TICK
from stack import TERMINAL, Stack, poll, queue_held, submit, wait_status

TASKS = "/api/v1/tasks"


def cli(stack: Stack, *args: str) -> None:
    out = subprocess.run([sys.executable, "-m", "aitasks.cli.main", *args], env=stack.env(), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def tenant(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def pushed_ids(r: redis.Redis, queue: str = "cpu") -> list[str]:
    """The ids of the messages on a Celery queue list, in the order they were pushed (kombu pops the right)."""
    return [json.loads(m)["headers"]["id"] for m in reversed(r.lrange(queue, 0, -1))]


# --- the scripts, on a real Redis -----------------------------------------------------------------


def accept(r: redis.Redis, owner: str, name: str, priority: str = "normal") -> Job:
    job = Job(id=name, type="diagnostic", tenant=owner, queue="cpu", priority=priority)

    async def create() -> None:
        client = async_twin(r)
        try:
            await AsyncJobStore(client).create(job, job_message(job.id, "cpu", 10, 20), 3600, None, 60)
        finally:
            await client.aclose()

    asyncio.run(create())
    return job


def end_oldest_handed_over(r: redis.Redis, store: JobStore) -> str:
    """The job handed to Celery longest ago ends SUCCESS (as a worker would end it): its slot frees."""
    pushed = pushed_ids(r)
    running = set(r.zrange(keys.dispatch("cpu", "inflight"), 0, -1))
    job_id = next(j for j in pushed if j in running)
    assert store.update(job_id, {"status": "SUCCESS", "finished_at": time.time()}) > 0
    return job_id


def test_a_newly_waiting_tenant_goes_next_then_slots_alternate_and_priorities_order_each_line(r: redis.Redis):
    store = JobStore(r)
    r.set(keys.dispatch("cpu", "capacity"), 2)
    for i in range(5):
        accept(r, "A", f"a{i}")
    assert pushed_ids(r) == ["a0", "a1"]  # two slots: the rest of A's backlog waits in its line
    accept(r, "B", "b-low", "low")
    accept(r, "B", "b-normal")
    high = accept(r, "B", "b-high", "high")
    assert pushed_ids(r) == ["a0", "a1"]  # no free slot: B waits too
    assert asyncio.run(position(r, high)) == 1
    for _ in range(8):
        end_oldest_handed_over(r, store)
    # B started waiting behind A's backlog and still went first; then one each; B's high, normal, low.
    assert pushed_ids(r) == ["a0", "a1", "b-high", "a2", "b-normal", "a3", "b-low", "a4"]
    assert r.zcard(keys.dispatch("cpu", "inflight")) == 0 and r.hlen(keys.dispatch("cpu", "messages")) == 0
    assert r.zcard(keys.dispatch("cpu", "tenants")) == 0 and r.zcard(keys.DISPATCH_BUSY) == 0


def async_twin(r: redis.Redis) -> aredis.Redis:
    """An asyncio client of the same server (the API's kind), with its own pool, closed by ``aclose``."""
    kwargs = r.connection_pool.connection_kwargs
    return aredis.Redis(host=kwargs["host"], port=kwargs["port"], decode_responses=True)


async def position(r: redis.Redis, job: Job) -> int | None:
    client = async_twin(r)
    try:
        return await queue_position(client, job)
    finally:
        await client.aclose()


def test_weights_share_the_slots_and_max_running_holds_a_tenant_back(r: redis.Redis):
    store = JobStore(r)
    r.set(keys.dispatch("cpu", "capacity"), 1)
    r.hset(keys.tenant_limits("heavy"), "weight", "3")
    for i in range(13):
        accept(r, "heavy", f"h{i:02}")
        accept(r, "light", f"l{i:02}")
    for _ in range(16):
        end_oldest_handed_over(r, store)
    counts = Counter(j[0] for j in pushed_ids(r)[1:17])  # after the first, handed over before light waited
    assert counts == {"h": 12, "l": 4}, pushed_ids(r)

    r.flushall()
    r.set(keys.dispatch("cpu", "capacity"), 3)
    r.hset(keys.tenant_limits("capped"), "max_running", "1")
    for i in range(3):
        accept(r, "capped", f"c{i}")
    accept(r, "free", "f0")
    accept(r, "free", "f1")
    assert pushed_ids(r) == ["c0", "f0", "f1"]  # capped holds one slot; the others go to free
    store.update("f0", {"status": "SUCCESS"})
    assert pushed_ids(r) == ["c0", "f0", "f1"]  # a free slot, but capped is at its max_running
    store.update("c0", {"status": "SUCCESS"})
    assert pushed_ids(r) == ["c0", "f0", "f1", "c1"]


def test_a_job_ended_while_waiting_leaves_its_line_and_the_tick_gives_back_lost_slots(r: redis.Redis):
    store = JobStore(r)
    r.set(keys.dispatch("cpu", "capacity"), 1)
    for i in range(3):
        accept(r, "A", f"a{i}")
    assert store.update("a1", {"status": "REVOKED", "finished_at": time.time()}) > 0  # cancelled in line
    assert r.lrange(keys.pending("cpu", "A", "normal"), 0, -1) == ["a2"] and not r.hexists(
        keys.dispatch("cpu", "messages"), "a1")
    r.delete(keys.job("a0"))  # a record that vanished while it held a slot (no UPDATE saw it end)
    handed, freed = r.eval(TICK, 0, "cpu", 1, 0, "1.0")
    assert (handed, freed) == (1, 1) and pushed_ids(r) == ["a0", "a2"]


def test_a_retry_lends_its_slot_through_the_countdown_and_its_next_run_takes_one_back(r: redis.Redis):
    """One slot: a0 runs, fails transiently and waits out a countdown (RUN_UPDATE with lend_slot): its slot
    goes to a1 in the same step. a0's retried run (START) takes a slot back although the queue is full, so
    a1's end hands nothing over; a0's end frees the last. A write that lends nothing (a progress report)
    and a job holding no slot (never handed over through a line) change no count."""
    store = JobStore(r)
    r.set(keys.dispatch("cpu", "capacity"), 1)
    for i in range(3):
        accept(r, "A", f"a{i}")
    inflight, running = keys.dispatch("cpu", "inflight"), keys.tenant_running("A")
    claim = {"status": "PROCESSING", "attempts": 1}
    assert store.start("a0", 0, "t1", 3, time.time(), claim).code > 0
    assert store.run_update("a0", {"progress": 10}, "run:t1", lend_slot=False)[0] > 0
    assert pushed_ids(r) == ["a0"] and r.zrange(inflight, 0, -1) == ["a0"]
    written, _ = store.run_update("a0", {"status": "RETRY"}, "run:t1", end_delivery=True, lend_slot=True)
    assert written > 0 and r.hget(keys.job("a0"), "slot") == "lent"
    assert pushed_ids(r) == ["a0", "a1"] and r.zrange(inflight, 0, -1) == ["a1"]
    assert r.zrange(running, 0, -1) == ["a1"] and r.zscore(keys.DISPATCH_BUSY, "A") == 1

    assert store.start("a0", 0, "t2", 3, time.time(), {"status": "PROCESSING", "attempts": 2}).code > 0
    assert sorted(r.zrange(inflight, 0, -1)) == ["a0", "a1"] and not r.hexists(keys.job("a0"), "slot")
    assert r.zcard(running) == 2 and r.zscore(keys.DISPATCH_BUSY, "A") == 2
    assert store.update("a1", {"status": "SUCCESS"}) > 0
    assert pushed_ids(r) == ["a0", "a1"]  # still one over the capacity: nothing handed over
    assert store.run_update("a0", {"status": "SUCCESS"}, "run:t2", end_delivery=True)[0] > 0
    assert pushed_ids(r) == ["a0", "a1", "a2"] and r.zrange(inflight, 0, -1) == ["a2"]

    r.flushall()
    r.hset(keys.job("direct"), mapping={"id": "direct", "type": "diagnostic", "tenant": "B", "queue": "cpu",
                                        "status": "PROCESSING", "run_token": "t3"})
    assert store.run_update("direct", {"status": "RETRY"}, "run:t3", lend_slot=True)[0] > 0
    assert not r.hexists(keys.job("direct"), "slot") and r.zcard(keys.DISPATCH_BUSY) == 0


# --- a deployment -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_tenants_single_job_starts_ahead_of_anothers_backlog_and_priorities_order_its_own(make_stack: Any):
    """One cpu slot. Tenant A queues 20 jobs; tenant B then submits one: it starts after at most the job
    running and the one already handed over (FIFO: after all 20). Then B's own line: a blocker holds the
    slot while B queues low, normal, high (as a form field), normal; they start high, normal, normal, low,
    show their place in line meanwhile, and the recovery pass leaves jobs waiting in a line alone."""
    stack: Stack = make_stack({"AITASKS_LEASE_S": "2"})
    stack.wait_workers()
    a, b = tenant("a"), tenant("b")
    with stack.client(tenant=a) as ca, stack.client(tenant=b) as cb:
        backlog = [submit(ca, parameters={"duration_s": 0.2}) for _ in range(20)]
        poll(lambda: wait_status(ca, backlog[0], {"PROCESSING"} | TERMINAL), "A's first job to start")
        single = submit(cb, parameters={"duration_s": 0.2})
        single_started = wait_status(cb, single, timeout_s=60)["started_at"]
        ahead = [j for j in backlog if (wait_status(ca, j, timeout_s=60)["started_at"] or "") < single_started]
        assert len(ahead) <= 3, f"{len(ahead)} of A's jobs started before B's"

        with queue_held(cb) as release:
            low = submit(cb, parameters={"steps": 1}, priority="low")
            normal = submit(cb, parameters={"steps": 1})
            form = cb.post(f"{TASKS}/submit/", data={"task_type": "diagnostic", "priority": "high"})
            assert form.status_code == 202, form.text
            high = form.json()["task_id"]
            normal2 = submit(cb, parameters={"steps": 1}, priority="normal")
            places = {j: cb.get(f"{TASKS}/{j}/status/").json().get("queue_position") for j in (low, normal, high, normal2)}
            assert places == {high: 1, normal: 2, normal2: 3, low: 4}, places
            assert cb.get(f"{TASKS}/{high}/status/").json()["priority"] == "high"
            metrics = httpx.get(f"{stack.url}/metrics").text
            assert f'aitasks_tenant_jobs_waiting{{tenant="{b}"}} 4' in metrics, metrics
            assert cb.get("/api/v1/limits").json()["usage"]["running"] == 1  # the blocker
            time.sleep(5)  # two and more recovery passes (lease 2 s) see these jobs waiting in their line
            release()
        ends = {j: wait_status(cb, j) for j in (low, normal, high, normal2)}
        assert all(e["status"] == "SUCCESS" for e in ends.values()), ends
        order = sorted(ends, key=lambda j: ends[j]["started_at"])
        assert order == [high, normal, normal2, low], [ends[j]["priority"] for j in order]
        assert all(stack.redis.hget(keys.job(j), "generation") is None for j in ends)  # none queued again

        bad = cb.post(f"{TASKS}/submit/", json={"task_type": "diagnostic", "priority": "urgent"})
        assert bad.status_code == 400 and bad.json()["fields"][0]["field"] == "priority", bad.text


@pytest.mark.slow
def test_max_running_holds_while_the_worker_running_the_job_is_sigkilled(make_stack: Any, tmp_path: Path):
    """Two cpu workers, a tenant with max_running 1 and three 1.5 s jobs: never two of them PROCESSING at
    once, also after the worker running one is SIGKILLed (its job still holds the tenant's slot until it is
    taken back and run again); all three end SUCCESS, each run to its end once (the diagnostic ledger)."""
    stack: Stack = make_stack({"AITASKS_LEASE_S": "2", LEDGER_ENV: str(tmp_path / "ledger.jsonl")})
    stack.start_worker("cpu", "worker-cpu-2")
    stack.wait_workers()
    owner = tenant("capped")
    cli(stack, "tenants", "set", owner, "--max-running", "1")
    with stack.client(tenant=owner) as c:
        jobs = [submit(c, parameters={"duration_s": 1.5, "steps": 6}) for _ in range(3)]
        first = poll(lambda: next((j for j in jobs if c.get(f"{TASKS}/{j}/status/").json()["status"] == "PROCESSING"),
                                  None), "a job to start")
        node = stack.redis.hget(keys.job(first), "worker").decode()
        victim = next(p for p in stack.workers.values() if f".{p.pid}@" in node)
        victim.kill_group()
        most = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = [c.get(f"{TASKS}/{j}/status/").json()["status"] for j in jobs]
            most = max(most, states.count("PROCESSING"))
            if all(s in TERMINAL for s in states):
                break
            time.sleep(0.05)
        finals = [wait_status(c, j)["status"] for j in jobs]
        assert finals == ["SUCCESS"] * 3, f"{finals}\n{stack.logs()}"
        assert most == 1, f"{most} of the tenant's jobs were PROCESSING at once (max_running 1)"
        assert stack.redis.zcard(keys.tenant_running(owner)) == 0
    done = Counter(json.loads(x)["job"] for x in (tmp_path / "ledger.jsonl").read_text().splitlines()
                   if json.loads(x)["event"] == "done")
    assert done == {j: 1 for j in jobs}, done


@pytest.mark.slow
def test_the_dispatcher_killed_again_and_again_loses_and_doubles_nothing(make_stack: Any, tmp_path: Path):
    """Three tenants queue 60 short jobs on two cpu workers; the worker holding the dispatcher's lock is
    SIGKILLed (with its pool) three times while the lines drain and started again. Every job ends SUCCESS,
    each run to its end exactly once, and the lines, the slots and the messages are all empty after."""
    stack: Stack = make_stack({"AITASKS_LEASE_S": "2", LEDGER_ENV: str(tmp_path / "ledger.jsonl")})
    stack.start_worker("cpu", "worker-cpu-2")
    stack.wait_workers()
    r = stack.redis
    jobs: list[tuple[httpx.Client, str]] = []
    clients = [stack.client(tenant=tenant(f"t{i}")) for i in range(3)]
    try:
        for i in range(60):
            c = clients[i % 3]
            jobs.append((c, submit(c, parameters={"duration_s": 0.05})))
        def live_holder() -> str | None:
            """The stack's name of the live worker holding the dispatcher's lock (a killed one's lock lingers
            until it expires)."""
            holder = (r.get(keys.DISPATCHER) or b"").decode()
            return next((n for n, p in stack.workers.items() if p.alive() and f".{p.pid}@" in holder), None)

        for _ in range(3):
            name = poll(live_holder, "a live worker to hold the dispatcher's lock", timeout_s=30)
            stack.workers[name].kill_group()
            stack.start_worker("gpu" if "gpu" in name else "cpu", name)
        finals = [wait_status(c, j, timeout_s=120)["status"] for c, j in jobs]
        assert finals == ["SUCCESS"] * 60, f"{Counter(finals)}\n{stack.logs()}"
    finally:
        for c in clients:
            c.close()
    done = Counter(json.loads(x)["job"] for x in (tmp_path / "ledger.jsonl").read_text().splitlines()
                   if json.loads(x)["event"] == "done")
    assert sorted(done.values()) == [1] * 60 and set(done) == {j for _, j in jobs}
    poll(lambda: r.zcard(keys.dispatch("cpu", "inflight")) == 0, "every slot given back", timeout_s=30)
    assert r.hlen(keys.dispatch("cpu", "messages")) == 0 and r.zcard(keys.dispatch("cpu", "tenants")) == 0


@pytest.mark.slow
def test_a_job_that_waits_past_its_pending_limit_ends_failure_with_its_event(make_stack: Any):
    """No cpu worker: a cpu job waits in its line. Past AITASKS_PENDING_TTL_S it ends FAILURE
    (PendingTimeout), its stream sees that end, and it leaves its line: never a silent expiry."""
    stack: Stack = make_stack({"AITASKS_PENDING_TTL_S": "3", "AITASKS_LEASE_S": "2"})
    stack.wait_workers()
    stack.workers["worker-cpu"].stop(signal.SIGTERM, 30)
    with stack.client() as c:
        job = submit(c, parameters={"steps": 1})
        with c.stream("GET", f"{TASKS}/{job}/events", timeout=60) as events:
            assert events.status_code == 200
            text = ""
            for line in events.iter_lines():
                text += line + "\n"
                if "PendingTimeout" in line:
                    break
        final = wait_status(c, job)
        assert final["status"] == "FAILURE" and final["error_type"] == "PendingTimeout", final
        assert "pending limit (3 s)" in final["error"], final
        assert stack.redis.hlen(keys.dispatch("cpu", "messages")) == 0


@pytest.mark.slow
def test_weights_share_one_worker_slot_and_a_replicate_input_sets_the_priority(make_stack: Any):
    """One cpu slot held by a third tenant while tenants of weight 3 and 1 queue 12 short jobs each (the
    heavy one first): once it is free, the first 16 of them to start are about 3 heavy to 1 light. A
    Replicate prediction's `priority` input is the job's priority, not a parameter of its type."""
    stack: Stack = make_stack()
    stack.wait_workers()
    heavy, light = tenant("heavy"), tenant("light")
    cli(stack, "tenants", "set", heavy, "--weight", "3")
    with stack.client() as holder, stack.client(tenant=heavy) as ch, stack.client(tenant=light) as cl:
        with queue_held(holder):
            jobs = [(ch, submit(ch, parameters={"duration_s": 0.05})) for _ in range(12)]
            jobs += [(cl, submit(cl, parameters={"duration_s": 0.05})) for _ in range(12)]
        ends = [(c is ch, wait_status(c, j)) for c, j in jobs]
        assert all(e["status"] == "SUCCESS" for _, e in ends), ends
        first = sorted(ends, key=lambda x: x[1]["started_at"])[:16]
        assert 11 <= sum(is_heavy for is_heavy, _ in first) <= 13, [h for h, _ in first]

        r = cl.post("/v1/models/aitasks/diagnostic/predictions",
                    json={"input": {"priority": "high", "parameters": {"steps": 1}}})
        assert r.status_code in (201, 202), r.text
        job = wait_status(cl, r.json()["id"])
        assert job["status"] == "SUCCESS" and job["priority"] == "high", job


@pytest.mark.slow
def test_a_job_waiting_out_its_retry_countdown_lends_its_slot_and_takes_one_back_to_run(make_stack: Any):
    """One cpu slot. Tenant A's job fails transiently 3 times (its most) before a 1.5 s run (backoff from 0.5 s,
    doubling, jittered: 1.75-3.5 s of countdowns in all). The slot is not held through a countdown, where the
    worker would sit idle: tenant B's job, submitted after A's first failure, runs and ends before A's
    last attempt. A's retried runs take a slot back (counted in flight and as its tenant's running job
    while they run), and once both ended no slot is held."""
    stack: Stack = make_stack()
    stack.wait_workers()
    a, b = tenant("a"), tenant("b")
    r = stack.redis
    inflight = keys.dispatch("cpu", "inflight")
    with stack.client(tenant=a) as ca, stack.client(tenant=b) as cb:
        retrying = submit(ca, parameters={"fail_times": 3, "duration_s": 1.5})
        wait_status(ca, retrying, {"RETRY"} | TERMINAL)
        single = submit(cb, parameters={"steps": 1})
        b_end = wait_status(cb, single, timeout_s=60)
        assert b_end["status"] == "SUCCESS", b_end
        assert ca.get(f"{TASKS}/{retrying}/status/").json()["status"] != "SUCCESS", "A ended before B"

        def last_attempt_running() -> dict[str, Any] | None:
            job: dict[str, Any] = ca.get(f"{TASKS}/{retrying}/status/").json()
            assert job["status"] not in TERMINAL, job
            return job if job["status"] == "PROCESSING" and job["attempts"] == 4 else None

        poll(last_attempt_running, "A's last attempt to run", timeout_s=60, interval_s=0.02)
        assert r.zscore(inflight, retrying) is not None, "A's retried run holds no slot"
        assert r.zscore(keys.tenant_running(a), retrying) is not None, "A's retried run is not counted running"
        a_end = wait_status(ca, retrying, timeout_s=60)
        assert a_end["status"] == "SUCCESS" and a_end["attempts"] == 4, a_end
        assert b_end["finished_at"] < a_end["finished_at"]
        poll(lambda: r.zcard(inflight) == 0, "every slot given back", timeout_s=10)
        assert r.zcard(keys.tenant_running(a)) == 0 and r.zcard(keys.tenant_running(b)) == 0
        assert r.zscore(keys.DISPATCH_BUSY, a) is None and r.zscore(keys.DISPATCH_BUSY, b) is None
