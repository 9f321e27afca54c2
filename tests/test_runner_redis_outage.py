"""No job is forgotten when Redis fails under the runner: the message goes back to the queue instead of
being acknowledged as a failed task, and the record's state keeps the job to one run."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from types import ModuleType
from unittest import mock

import httpx
import pytest
import redis
from celery.exceptions import Reject
from billiard.einfo import ExceptionInfo
from kombu.message import Message

from aitasks.jobs import keys
from aitasks.jobs.artifacts import ArtifactStore
from aitasks.jobs.messages import job_body, job_headers
from aitasks.jobs.store import JobStore
from aitasks.service.redis_server import free_port
from aitasks.settings import Settings, get_settings
from aitasks.worker import redis_outage
from aitasks.worker.request import JobRequest
from aitasks.worker.resources import WorkerResources
from stack import Stack, submit

TASKS = "/api/v1/tasks"


# --- the runner alone, Redis down ----------------------------------------------------------------


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The worker's task module, imported against a Redis that nothing listens on."""
    monkeypatch.setenv("AITASKS_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    get_settings.cache_clear()
    from aitasks.worker import runner as module

    yield module
    get_settings.cache_clear()


def delivered(job_id: str) -> tuple[Message, mock.MagicMock]:
    """The job's message as kombu hands it to the worker, on a channel that records ack and reject."""
    channel = mock.MagicMock()
    message = Message(body=job_body(job_id), channel=channel, delivery_tag="tag-1",
                      content_type="application/json", content_encoding="utf-8",
                      headers=job_headers(job_id, 10, 20),
                      properties={"delivery_info": {"exchange": "", "routing_key": "cpu"}},
                      delivery_info={"exchange": "", "routing_key": "cpu"})
    return message, channel


def test_a_redis_error_in_the_runner_requeues_the_message_instead_of_acknowledging_it(runner, monkeypatch,
                                                                                      tmp_path):
    """Redis unreachable while the runner reads the record: the task raises Reject(requeue=True), and
    Celery's request (with the app's acks_late and acks_on_failure_or_timeout) rejects the message back
    onto its queue; before, the ConnectionError counted as a failure and the message was acknowledged."""
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.2, socket_timeout=0.2)
    res = WorkerResources(Settings(), dead, JobStore(dead), ArtifactStore(tmp_path))
    monkeypatch.setattr(runner, "resources", lambda: res)
    monkeypatch.setattr(redis_outage, "RETRY_WRITES_S", 0.3)
    monkeypatch.setattr(redis_outage, "WAIT_FOR_REDIS_S", 0.3)

    message, channel = delivered("job-1")
    # As the worker's consumer builds it (celery/worker/consumer/consumer.py): ack and reject go to kombu.
    request = JobRequest(message, app=runner.app, task=runner.run_job,
                         on_ack=message.ack_log_error, on_reject=message.reject_log_error)
    started = time.monotonic()
    try:
        runner.run_job.run("job-1")
    except BaseException:
        einfo = ExceptionInfo()
    else:
        pytest.fail("the runner returned with Redis down")
    assert time.monotonic() - started >= 0.5  # it waited for Redis (the backoff) before giving up
    raised = getattr(einfo.exception, "exc", einfo.exception)  # (billiard wraps it for the trip to the worker)
    assert isinstance(raised, Reject) and raised.requeue, raised
    request.on_failure(einfo)
    channel.basic_reject.assert_called_once_with("tag-1", requeue=True)
    channel.basic_ack.assert_not_called()


def test_the_runner_waits_for_redis_to_load_before_giving_the_message_back(monkeypatch):
    """While Redis loads its append-only file it answers BusyLoadingError: a ConnectionError, waited for."""
    client = mock.Mock()
    client.ping.side_effect = [redis.BusyLoadingError("loading"), redis.TimeoutError("slow"), True]
    monkeypatch.setattr(redis_outage.time, "sleep", lambda s: None)
    assert redis_outage.wait_for_redis(client, 5)
    assert client.ping.call_count == 3
    with pytest.raises(Reject) as raised:
        redis_outage.give_back(mock.Mock(), "job-2", redis.BusyLoadingError("loading"))
    assert raised.value.requeue


# --- a real deployment, Redis SIGKILLed while workers take jobs ----------------------------------


def statuses(r: redis.Redis, ids: list[str]) -> list[str]:
    pipe = r.pipeline(transaction=False)
    for task_id in ids:
        pipe.hget(keys.job(task_id), "status")
    return [(s or b"?").decode() for s in pipe.execute()]


def until(fn, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if fn():
                return True
        except redis.RedisError:
            pass
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_redis_killed_while_workers_take_jobs_every_job_still_ends_success_once(make_stack):
    """Batches of short jobs on both queues; Redis SIGKILLed while the workers take them (so a worker is
    reading or writing a record in that instant) and restarted on its port with its append-only file:
    every job ends SUCCESS within 60 s of the restart, and each is counted finished once."""
    # The statuses are read from the Redis records, which must outlive the whole run: recorded jobs otherwise
    # leave Redis AITASKS_RECORDED_KEEP_S (60 s) after they end, and this run takes longer than that.
    stack: Stack = make_stack({"AITASKS_RECORDED_KEEP_S": "3600"})
    rng = random.Random(7)
    all_ids: list[str] = []
    with stack.client() as c:
        for round_ in range(24):  # each kill may miss the instant a worker touches a record: several
            ids = [submit(c, parameters={"duration_s": 0, "steps": 1, "queue": ("cpu", "gpu")[i % 2]})
                   for i in range(12)]
            all_ids += ids
            # Kill while the batch is being taken, at a random instant.
            time.sleep(rng.uniform(0.02, 0.4))
            stack.redis_server.kill()
            time.sleep(rng.uniform(0.1, 0.6))
            stack.redis_server.start()
            restarted = time.monotonic()
            r = redis.Redis.from_url(stack.redis_server.url)
            ended = until(lambda: all(s == "SUCCESS" for s in statuses(r, all_ids)), 60)
            final = dict(zip(all_ids, statuses(r, all_ids)))
            stuck = {k: v for k, v in final.items() if v != "SUCCESS"}
            assert ended, f"round {round_}: not SUCCESS 60 s after the restart: {stuck}\n{stack.logs()}"
            assert time.monotonic() - restarted < 60
            r.close()
        # Exactly once: each job's outcome was counted once (the UPDATE script counts terminal writes).
        metrics = until_metrics(c, len(all_ids))
        assert metrics == len(all_ids), metrics


def until_metrics(c: httpx.Client, expected: int) -> int:
    """``aitasks_jobs_finished_total`` of diagnostic SUCCESS, once the API answers again."""
    prefix = 'aitasks_jobs_finished_total{task_type="diagnostic",status="SUCCESS"}'
    count = -1
    for _ in range(100):
        r = c.get("/metrics")
        if r.status_code == 200:
            lines = [ln for ln in r.text.splitlines() if ln.startswith(prefix)]
            count = int(float(lines[0].rsplit(" ", 1)[1])) if lines else 0
            if count == expected:
                break
        time.sleep(0.1)
    return count
