"""The same job lifecycle and faults on both brokers: Redis (the default) and RabbitMQ (AITASKS_BROKER_URL).

Every test here runs twice, ``[redis]`` and ``[amqp]``, against real processes: the API and Celery workers
as subprocesses, their own redis-server, and for ``amqp`` a private ``rabbitmq-server`` (tests/
rabbitmq_server.py: own ports, data, epmd, cookie; Debian's package). What must hold on both: submit to
SUCCESS with progress over SSE, cancel (queued and running), retries with their backoff then success,
child jobs (fan-out and the chord's callback), time limits, a duplicate message doing nothing, a worker
SIGKILLed mid-job (the job ends SUCCESS once, on the other worker). RabbitMQ alone: the broker restarted
while jobs are queued loses none (durable quorum queues), and jobs accepted while it is down wait in the
Redis outbox and run once it is back; /readyz names it while it is down.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from kombu import Connection

from aitasks.jobs import keys
from aitasks.jobs.messages import job_message
from aitasks.jobs.broker import broker_queues
from rabbitmq_server import RabbitServer, running_rabbitmq
from stack import TERMINAL, Stack, poll, queue_held, sse_events, submit, wait_status
from test_faults import cpu_worker, explain, finished_counts, quick_job, record, result_of, wait_end, wait_running

TASKS = "/api/v1/tasks"
BROKERS = ["redis", "amqp"]


# --- the brokers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rabbit() -> Iterator[RabbitServer]:
    with running_rabbitmq() as server:
        yield server


def empty_queues(server: RabbitServer) -> None:
    """Nothing left in the cpu and gpu queues by an earlier test's deployment (one broker per module)."""
    with Connection(server.url, connect_timeout=5) as conn:
        channel = conn.channel()
        for queue in broker_queues(amqp=True):
            bound = queue(channel)
            bound.declare()
            bound.purge()


def broker_env(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "redis":
        return {}
    server: RabbitServer = request.getfixturevalue("rabbit")
    empty_queues(server)
    return {"AITASKS_BROKER_URL": server.url}


@pytest.fixture(params=BROKERS)
def env(request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings of a deployment on this test's broker (for ``make_stack``)."""
    return broker_env(request)


@pytest.fixture(scope="module", params=BROKERS)
def broker_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One deployment per broker for the tests that need no faults."""
    s = Stack(tmp_path_factory.mktemp(f"stack-{request.param}"), env=broker_env(request))
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture
def client(broker_stack: Stack) -> Iterator[httpx.Client]:
    with broker_stack.client() as c:
        yield c


def amqp(stack: Stack) -> bool:
    return "AITASKS_BROKER_URL" in stack.extra_env


def push_duplicate(stack: Stack, task_id: str, queue: str = "cpu") -> None:
    """A second copy of a job's message, sent the way the first went: onto the queue list (Redis as the
    broker) or into the outbox the relays publish to RabbitMQ from."""
    body = record(stack, task_id)
    message = job_message(task_id, queue, float(body["soft_time_limit_s"]), float(body["time_limit_s"]))
    with redis.Redis.from_url(stack.redis_server.url) as r:
        r.lpush(keys.queue_list(queue, amqp(stack)), message)


def outbox_drained(stack: Stack) -> Callable[[], bool]:
    def drained() -> bool:
        with redis.Redis.from_url(stack.redis_server.url) as r:
            names = r.smembers(keys.BROKER_RELAYS)
            return r.llen(keys.BROKER_OUTBOX) == 0 and all(
                r.llen(keys.broker_inflight(n.decode())) == 0 for n in names)
    return drained


# --- the lifecycle, one deployment per broker ----------------------------------------------------


def test_submit_runs_to_success_with_progress_over_sse(broker_stack, client):
    task_id = submit(client, parameters={"duration_s": 1, "steps": 5})
    events = list(sse_events(client, task_id))
    statuses = [e["status"] for e in events]
    assert statuses[-1] == "SUCCESS", events
    assert "PROCESSING" in statuses, events
    progress = [e["progress"] for e in events if e["status"] == "PROCESSING"]
    assert progress == sorted(progress) and len(set(progress)) >= 3, events
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), seqs
    assert result_of(client, task_id)["deliveries"] == 1
    if amqp(broker_stack):  # it went through RabbitMQ: nothing on Redis's queue lists
        with redis.Redis.from_url(broker_stack.redis_server.url) as r:
            assert r.llen("cpu") == 0 and r.llen("gpu") == 0 and not r.exists(keys.UNACKED)


def test_routing_to_the_gpu_queue(broker_stack, client):
    task_id = submit(client, parameters={"queue": "gpu", "duration_s": 0.1})
    final = wait_status(client, task_id)
    assert final["status"] == "SUCCESS", explain(broker_stack, final)
    assert "gpu" in record(broker_stack, task_id)["worker"], record(broker_stack, task_id)


def test_cancel_a_queued_job_and_a_running_one(broker_stack, client):
    with queue_held(client) as release:
        queued = submit(client, parameters={"duration_s": 1})
        r = client.post(f"{TASKS}/{queued}/cancel/")
        assert r.status_code == 200 and r.json()["status"] == "REVOKED", r.text
        release()
    running = submit(client, parameters={"duration_s": 30, "steps": 60})
    wait_running(broker_stack, client, running)
    assert client.post(f"{TASKS}/{running}/cancel/").status_code == 200
    final = wait_end(broker_stack, client, running)
    assert final["status"] == "REVOKED", explain(broker_stack, final)
    assert final["message"] == "Cancelled while running", final
    # The queued one's message still reaches the worker, which ends nothing twice.
    assert wait_status(client, quick_job(client))["status"] == "SUCCESS"
    body = client.get(f"{TASKS}/{queued}/status/").json()
    assert body["status"] == "REVOKED" and body["started_at"] is None, body


def test_transient_failures_retry_with_backoff_then_succeed(broker_stack, client):
    """The retry's message goes through the broker with its countdown (on RabbitMQ: Celery's native
    delayed delivery on quorum queues, not held by the worker)."""
    task_id = submit(client, parameters={"fail_times": 2})
    events = list(sse_events(client, task_id, timeout_s=90))
    statuses = [e["status"] for e in events]  # the stream may open after the first attempt already failed
    assert [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s][-3:] == [
        "RETRY", "PROCESSING", "SUCCESS"], events
    retried = [e["attempts"] for e in events if e["status"] == "RETRY"]
    assert retried[-1] == 2 and set(retried) <= {1, 2}, events
    final = events[-1]
    assert final["attempts"] == 3 and final["result"]["attempts"] == 3, final
    assert finished_counts(client)["SUCCESS"] >= 1


def test_a_duplicate_message_of_a_finished_job_changes_nothing(broker_stack, client):
    """At least once: the relay may publish an outbox entry twice (confirmed, then its worker died before
    it removed the entry). The copy is dropped by the record's state, on both brokers."""
    task_id = quick_job(client)
    first = wait_status(client, task_id)
    assert first["status"] == "SUCCESS"
    seq = int(record(broker_stack, task_id)["seq"])
    push_duplicate(broker_stack, task_id)
    log = broker_stack.workers["worker-cpu"].log_path
    poll(lambda: any(task_id in line and "duplicate delivery dropped" in line
                     for line in log.read_text(errors="replace").splitlines()), "the copy to be dropped", 60)
    rec = record(broker_stack, task_id)
    assert int(rec["seq"]) == seq and rec["deliveries"] == "1", rec
    assert client.get(f"{TASKS}/{task_id}/status/").json()["finished_at"] == first["finished_at"]


def test_a_duplicate_message_of_a_running_job_ends_it_once(broker_stack, client):
    """A copy arriving while the job runs elsewhere: fenced, one outcome written, the job SUCCESS once."""
    broker_stack.start_worker("cpu", name="worker-cpu-extra")
    try:
        poll(lambda: client.get("/readyz").json()["workers"]["cpu"] >= 2, "a second cpu worker", 90)
        successes = finished_counts(client).get("SUCCESS", 0)
        task_id = submit(client, parameters={"duration_s": 3, "steps": 12})
        wait_running(broker_stack, client, task_id)
        push_duplicate(broker_stack, task_id)
        events = list(sse_events(client, task_id))
        assert [e["status"] for e in events].count("SUCCESS") == 1, events
        final = wait_status(client, task_id)
        assert final["status"] == "SUCCESS", explain(broker_stack, final)
        time.sleep(4)  # the other run, had it not been fenced off, would have ended by now
        assert len([e for e in events if e["status"] in TERMINAL]) == 1, events
        assert client.get(f"{TASKS}/{task_id}/status/").json()["finished_at"] == final["finished_at"]
        assert finished_counts(client).get("SUCCESS", 0) == successes + 1
    finally:
        broker_stack.workers.pop("worker-cpu-extra").stop()


def test_child_jobs_fan_out_and_call_the_parent_back(broker_stack, client):
    """comparison: its variants are child jobs created and queued in one step (fan_out.lua), the last
    child's end queues the parent's callback (chord_end.lua): through the outbox on RabbitMQ."""
    from test_comparison import ASTRONAUT, b64

    variants = [{"task_type": "style_transfer", "parameters": {"style": "pencil"}},
                {"task_type": "style_transfer", "parameters": {"style": "oil"}}]
    r = client.post(f"{TASKS}/submit/", json={"task_type": "comparison", "image": b64(ASTRONAUT),
                                              "parameters": {"variants": variants}})
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    final = wait_status(client, task_id, timeout_s=180)
    assert final["status"] == "SUCCESS", explain(broker_stack, final)
    for child in final["children"]:
        assert wait_status(client, child)["status"] == "SUCCESS"


# --- faults, a deployment per test ---------------------------------------------------------------


LIMITS = json.dumps({"diagnostic": {"soft_time_limit_s": 1, "time_limit_s": 2}})


@pytest.mark.slow
def test_time_limits_fail_the_job_and_the_worker_goes_on(make_stack, env):
    stack = make_stack(env={**env, "AITASKS_TYPE_OVERRIDES": LIMITS})
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


@pytest.mark.slow
def test_worker_killed_mid_job_the_job_succeeds_once_on_the_other(make_stack, env):
    """The whole worker (main process and pool) SIGKILLed mid-job, a second cpu worker alive: RabbitMQ
    gives the unacknowledged message to the other consumer once the connection dies; with Redis the
    lease recovery takes it back (AITASKS_LEASE_S=3). One SUCCESS, run by the other worker."""
    stack = make_stack(env={**env, "AITASKS_LEASE_S": "3"})
    other = stack.start_worker("cpu", name="worker-cpu-2")
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


# --- RabbitMQ itself restarted -------------------------------------------------------------------


@pytest.mark.slow
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


def test_rabbitmq_server_helper_is_private(rabbit):
    """The test broker listens on its own port, with its own node name and epmd port (no shared instance)."""
    assert rabbit.port not in (5672, 5671) and rabbit.epmd_port != 4369
    assert rabbit.node.startswith("aitasks-test-")
    assert Path(rabbit.root, "enabled_plugins").read_text().strip() == "[]."
    assert rabbit.answers()


@pytest.mark.slow
def test_outbox_entries_of_a_dead_relay_and_without_any_worker_are_published_later(make_stack, rabbit):
    """No worker (so no relay): an accepted job waits in the Redis outbox. An entry held in flight by a
    relay whose worker is dead (no heartbeat key) goes back to the outbox: both are published once a
    worker is up, and run once."""
    empty_queues(rabbit)
    stack = make_stack(env={"AITASKS_BROKER_URL": rabbit.url})
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
