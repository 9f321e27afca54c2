"""The job lifecycle on both brokers: Redis (the default) and RabbitMQ (AITASKS_BROKER_URL).

Every test here runs twice, ``[redis]`` and ``[amqp]``, against real processes: the API and Celery workers
as subprocesses, their own redis-server, and for ``amqp`` a private ``rabbitmq-server`` (tests/
rabbitmq_server.py: own ports, data, epmd, cookie; Debian's package). One deployment per broker: submit to
SUCCESS with progress over SSE, routing to the gpu queue, cancel (queued and running), retries with their
backoff then success, child jobs (fan-out and the chord's callback), and a duplicate message doing
nothing (of a finished job) or ending the job once (of a running one). Faults: test_broker_amqp_faults.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from aitasks.jobs import keys
from broker_fixtures import BROKERS, amqp, settings_for_broker, push_duplicate
from stack import TERMINAL, Stack, poll, queue_held, sse_events, submit, wait_status
from test_faults import explain, finished_counts, quick_job, record, result_of, wait_end, wait_running

pytestmark = pytest.mark.slow  # its own RabbitMQ and two deployments; child jobs run image models
TASKS = "/api/v1/tasks"


@pytest.fixture(scope="module", params=BROKERS)
def broker_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One deployment per broker for the tests that need no faults."""
    s = Stack(tmp_path_factory.mktemp(f"stack-{request.param}"), env=settings_for_broker(request))
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture
def client(broker_stack: Stack) -> Iterator[httpx.Client]:
    with broker_stack.client() as c:
        yield c


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


def test_rabbitmq_server_helper_is_private(rabbit):
    """The test broker listens on its own port, with its own node name and epmd port (no shared instance)."""
    assert rabbit.port not in (5672, 5671) and rabbit.epmd_port != 4369
    assert rabbit.node.startswith("aitasks-test-")
    assert Path(rabbit.root, "enabled_plugins").read_text().strip() == "[]."
    assert rabbit.answers()
