"""Faults on both brokers: Redis (the default) and RabbitMQ (AITASKS_BROKER_URL), a deployment per test.

Time limits and a worker SIGKILLed mid-job run twice, ``[redis]`` and ``[amqp]``. RabbitMQ alone: the
broker restarted under a running job (its redelivered message finds the job ended: one SUCCESS), the
broker restarted while jobs are queued loses none (durable quorum queues), jobs accepted while it is down
wait in the Redis outbox and run once it is back (/readyz names it meanwhile, /metrics shows its queue
depth), and the outbox entries of a dead relay are published by another.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
import redis

from aitasks.jobs import keys
from broker_fixtures import empty_queues, outbox_drained
from redis_events import drain_job, every_job_subscribed, states
from stack import poll, sse_events, submit
from test_faults import cpu_worker, explain, finished_counts, quick_job, record, wait_end, wait_running

pytestmark = pytest.mark.slow  # a deployment per test, kills and restarts
TASKS = "/api/v1/tasks"


LIMITS = json.dumps({"diagnostic": {"soft_time_limit_s": 1, "time_limit_s": 2}})


def test_time_limits_fail_the_job_and_the_worker_goes_on(make_stack, broker_env):
    stack = make_stack(env={**broker_env, "AITASKS_TYPE_OVERRIDES": LIMITS})
    with stack.client() as c:
        hard = submit(c, parameters={"duration_s": 20, "steps": 20, "ignore_soft_limit": True})
        soft = submit(c, parameters={"duration_s": 20, "steps": 20})
        for task_id, which in ((hard, "hard time limit"), (soft, "soft time limit")):
            final = wait_end(stack, c, task_id)
            assert final["status"] == "FAILURE", explain(stack, final)
            assert final["error_type"] == "TimeLimitExceeded" and which in final["error"], final
            assert record(stack, task_id)["deliveries"] == "1"
        assert wait_end(stack, c, quick_job(c))["status"] == "SUCCESS"
        assert finished_counts(c) == {"FAILURE": 2, "SUCCESS": 1}


def test_worker_killed_mid_job_the_job_succeeds_once_on_the_other(make_stack, broker_env):
    """The whole worker (main process and pool) SIGKILLed mid-job, a second cpu worker alive: RabbitMQ
    gives the unacknowledged message to the other consumer once the connection dies; with Redis the
    lease recovery takes it back (AITASKS_LEASE_S=3). One SUCCESS, run by the other worker, and the loss
    seen as RETRY between the two runs: written by the recovery's REQUEUE (Redis) or, where the broker
    itself gives the message again (RabbitMQ), by the next run's START (jobs/start.lua)."""
    stack = make_stack(env={**broker_env, "AITASKS_LEASE_S": "3"})
    other = stack.start_worker("cpu", name="worker-cpu-2")
    r = stack.redis  # kept: a client let go closes its connections, the subscription's too
    ps = every_job_subscribed(r)
    with stack.client() as c:
        poll(lambda: c.get("/readyz").json()["workers"]["cpu"] >= 2, "two cpu workers", 90)
        task_id = submit(c, parameters={"duration_s": 3, "steps": 30})
        wait_running(stack, c, task_id)
        holder = record(stack, task_id)["worker"]  # the node name: "cpu.<pid of the worker>@<host>"
        victim, survivor = (other, cpu_worker(stack)) if f".{other.pid}@" in holder else (cpu_worker(stack), other)
        victim.kill_group()

        final = wait_end(stack, c, task_id)
        assert final["status"] == "SUCCESS", explain(stack, final)
        rec = record(stack, task_id)
        assert rec["worker"] != holder, rec
        assert (rec["deliveries"], rec["finished_deliveries"]) == ("2", "1"), rec
        assert survivor.alive(), survivor.tail()
        assert finished_counts(c) == {"SUCCESS": 1}
        events = list(sse_events(c, task_id))
        assert [e["status"] for e in events].count("SUCCESS") == 1, events
    seen = states(drain_job(ps, task_id))
    assert seen[-4:] == ["PROCESSING", "RETRY", "PROCESSING", "SUCCESS"] and "RETRY" not in seen[:-3], seen


# --- RabbitMQ itself restarted -------------------------------------------------------------------


def test_rabbitmq_restarted_with_jobs_queued_loses_none(make_stack, rabbit):
    """20 jobs wait in RabbitMQ (their worker is stopped) when the broker restarts; 10 more are accepted
    while it is down (the outbox keeps them; /readyz names the broker). Once the broker and the worker are
    back, all 30 run to SUCCESS, each once."""
    empty_queues(rabbit)
    stack = make_stack(env={"AITASKS_BROKER_URL": rabbit.url})
    with stack.client() as c:
        cpu_worker(stack).stop()  # warm shutdown: idle, it exits at once
        before = [quick_job(c, duration_s=0) for _ in range(20)]
        poll(outbox_drained(stack), "the gpu worker's relay to publish the 20 messages", 60)
        def depth_shown() -> str | None:
            text = c.get("/metrics").text
            return text if 'aitasks_queue_depth{queue="cpu"} 20' in text else None

        metrics = poll(depth_shown, "the queue depth RabbitMQ counts in /metrics", 30)
        assert "aitasks_broker_outbox 0" in metrics, metrics
        assert c.get("/api/v1/system").json()["queues"]["cpu"] == 20

        rabbit.stop()
        ready = poll(lambda: (b := httpx.get(f"{stack.url}/readyz", timeout=10)).status_code == 503
                     and b.json().get("broker") == "unreachable" and b.json(), "readyz to name the broker", 30)
        assert "RabbitMQ" in ready["broker_down"], ready
        during = [quick_job(c, duration_s=0) for _ in range(10)]  # accepted: recorded and in the outbox
        rabbit.start()

        stack.workers.pop("worker-cpu")
        stack.start_worker("cpu")
        for task_id in before + during:
            final = wait_end(stack, c, task_id, timeout_s=120)
            assert final["status"] == "SUCCESS", explain(stack, final)
            assert record(stack, task_id)["deliveries"] == "1", task_id
        assert finished_counts(c) == {"SUCCESS": 30}
        poll(outbox_drained(stack), "an empty outbox", 30)
        poll(lambda: httpx.get(f"{stack.url}/readyz", timeout=10).status_code == 200, "ready again", 60)


def test_outbox_entries_of_a_dead_relay_and_without_any_worker_are_published_later(make_stack, rabbit):
    """No worker (so no relay): an accepted job waits in the Redis outbox. An entry held in flight by a
    relay whose worker is dead (no heartbeat key) goes back to the outbox: both are published once a
    worker is up, and run once."""
    empty_queues(rabbit)
    # Straight into the outbox (no fair dispatch): with it, only as many jobs as the last workers had slots
    # are handed over while none runs, the others wait in their tenant's line (tests/test_fair_dispatch.py).
    stack = make_stack(env={"AITASKS_BROKER_URL": rabbit.url, "AITASKS_FAIR_DISPATCH": "false"})
    with stack.client() as c:
        for name in list(stack.workers):
            stack.workers.pop(name).stop()
        ghosts, waiting = quick_job(c, duration_s=0), quick_job(c, duration_s=0)
        with redis.Redis.from_url(stack.redis_server.url) as r:
            assert r.llen(keys.BROKER_OUTBOX) == 2
            r.rpoplpush(keys.BROKER_OUTBOX, keys.broker_inflight("ghost@nowhere"))  # the older one: `ghosts`
            r.sadd(keys.BROKER_RELAYS, "ghost@nowhere")
        time.sleep(2)
        assert c.get(f"{TASKS}/{ghosts}/status/").json()["status"] == "PENDING"
        stack.start_worker("cpu")
        for task_id in (ghosts, waiting):
            final = wait_end(stack, c, task_id)
            assert final["status"] == "SUCCESS", explain(stack, final)
            assert record(stack, task_id)["deliveries"] == "1"
        poll(outbox_drained(stack), "an empty outbox and in-flight lists", 30)
        with redis.Redis.from_url(stack.redis_server.url) as r:
            assert not r.sismember(keys.BROKER_RELAYS, "ghost@nowhere")


def test_rabbitmq_restarted_while_a_job_runs_the_job_ends_once(make_stack, rabbit):
    """RabbitMQ goes away under a running job: the job goes on (Redis holds its state), its acknowledgement
    is lost with the connection, so RabbitMQ delivers the message again once back; that copy finds the job
    ended (or takes over the run, fenced): one SUCCESS, and the worker serves the next job."""
    empty_queues(rabbit)
    stack = make_stack(env={"AITASKS_BROKER_URL": rabbit.url})
    with stack.client() as c:
        task_id = submit(c, parameters={"duration_s": 4, "steps": 16})
        wait_running(stack, c, task_id)
        rabbit.stop()
        time.sleep(1)
        rabbit.start()
        final = wait_end(stack, c, task_id, timeout_s=120)
        assert final["status"] == "SUCCESS", explain(stack, final)
        nxt = quick_job(c)
        assert wait_end(stack, c, nxt, timeout_s=120)["status"] == "SUCCESS"
        events = list(sse_events(c, task_id))
        assert [e["status"] for e in events].count("SUCCESS") == 1, events
        assert finished_counts(c) == {"SUCCESS": 2}
