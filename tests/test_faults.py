"""Fault injection against real processes: Redis outages, killed workers, poison jobs, warm
shutdown, time limits and forced cancellation.

Every test builds its own deployment with ``make_stack`` (own redis-server with the append-only
file, real Celery workers, the API as a subprocess) and breaks it the way production breaks:
signals to real pids, Redis killed and restarted on the same port and data folder.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import redis

from aitasks.jobs import keys
from redis_events import drain_job, every_job_subscribed, states
from stack import TERMINAL, Process, Stack, poll, submit, wait_status

pytestmark = pytest.mark.slow  # kills and restarts workers and Redis, a stack per test

TASKS = "/api/v1/tasks"
# Readiness and outcomes get generous time: 2 cores, other suites running beside this one.
WAIT_S = 90


# --- helpers -------------------------------------------------------------------------------------


def wait_end(stack: Stack, client: httpx.Client, task_id: str, statuses: set[str] | None = None,
             timeout_s: float = WAIT_S) -> dict[str, Any]:
    """``wait_status`` that shows the deployment's logs when the job never gets there."""
    try:
        return wait_status(client, task_id, statuses, timeout_s=timeout_s)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{stack.logs()}") from None


def wait_running(stack: Stack, client: httpx.Client, task_id: str) -> dict[str, Any]:
    """Wait until the job has started and reported progress (so it is really mid-run)."""
    def started() -> dict[str, Any] | None:
        body = client.get(f"{TASKS}/{task_id}/status/").json()
        if body["status"] in TERMINAL:
            raise AssertionError(f"job ended before it could be interrupted: {body}\n{stack.logs()}")
        return body if body["status"] == "PROCESSING" and body["progress"] > 0 else None

    return poll(started, f"job {task_id} to run", interval_s=0.05)  # type: ignore[no-any-return]


def wait_started(stack: Stack, client: httpx.Client, task_id: str) -> dict[str, Any]:
    """Wait until the job is PROCESSING (for jobs that report no progress)."""
    body = wait_end(stack, client, task_id, {"PROCESSING"} | TERMINAL)
    assert body["status"] == "PROCESSING", body
    return body


def explain(stack: Stack, body: Any) -> str:
    return f"{body}\n{stack.logs()}"


@contextmanager
def redis_client(stack: Stack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack.redis_server.url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


def record(stack: Stack, task_id: str) -> dict[str, str]:
    """The raw job record, for the bookkeeping the API does not show (deliveries)."""
    with redis_client(stack) as r:
        return r.hgetall(f"aitasks:job:{task_id}")  # type: ignore[return-value]


def result_of(client: httpx.Client, task_id: str) -> dict[str, Any]:
    r = client.get(f"{TASKS}/{task_id}/result/")
    assert r.status_code == 200, r.text
    return r.json()["result"]  # type: ignore[no-any-return]


def finished_counts(client: httpx.Client) -> dict[str, int]:
    """``aitasks_jobs_finished_total`` by status, for diagnostic jobs (each stack has its own Redis)."""
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    out: dict[str, int] = {}
    prefix = 'aitasks_jobs_finished_total{task_type="diagnostic",status="'
    for line in r.text.splitlines():
        if line.startswith(prefix):
            status = line[len(prefix):].split('"', 1)[0]
            out[status] = int(float(line.rsplit(" ", 1)[1]))
    return out


def cpu_worker(stack: Stack) -> Process:
    return stack.workers["worker-cpu"]


def pool_child(stack: Stack, worker: Process) -> int:
    """The single pool process of a concurrency-1 prefork worker."""
    children = poll(worker.children, f"the pool process of {worker.name}")
    assert len(children) == 1, (children, stack.logs())
    return int(children[0])


def quick_job(client: httpx.Client, **params: Any) -> str:
    return submit(client, parameters={"steps": 2, "duration_s": 0.2, **params})


def assert_unavailable(response: httpx.Response, elapsed_s: float) -> None:
    """The Redis-outage promise: a 503 JSON error, quickly, saying what is wrong."""
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == "unavailable", body
    assert "Redis" in body["error"] and "nothing was accepted" in body["error"], body
    assert response.headers.get("retry-after"), response.headers
    # The promise is ~2 s; the bound leaves room for a loaded test machine.
    assert elapsed_s < 3.0, f"503 took {elapsed_s:.2f}s"


def timed(fn: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


# --- Redis outages -------------------------------------------------------------------------------


def test_redis_crash_503_fast_then_recovers_and_accepted_jobs_survive(make_stack):
    """Redis SIGKILLed: submit and status answer 503 "unavailable" within the promised time and
    nothing is half-accepted; restarted on the same port and data folder, the API and the workers
    reconnect by themselves and every job accepted (202) before the crash runs to SUCCESS (AOF).
    The API's outbox is off here (AITASKS_OUTBOX_MAX_MB=0): with it a submit is accepted (tests/test_outbox.py)."""
    stack = make_stack(env={"AITASKS_OUTBOX_MAX_MB": "0"})
    with stack.client() as c:
        # Park the cpu worker so accepted jobs wait in the queue through the crash.
        cpu_worker(stack).stop(signal.SIGTERM, 30)
        accepted = [quick_job(c) for _ in range(3)]
        # appendfsync everysec: give the append-only file its fsync, then crash Redis outright.
        time.sleep(1.5)
        stack.redis_server.kill()

        for _ in range(3):
            r, elapsed = timed(lambda: c.post(f"{TASKS}/submit/", json={"task_type": "diagnostic"}))
            assert_unavailable(r, elapsed)
        r, elapsed = timed(lambda: c.get(f"{TASKS}/{accepted[0]}/status/"))
        assert_unavailable(r, elapsed)
        r, elapsed = timed(lambda: c.get(f"{TASKS}/{accepted[0]}/result/"))
        assert_unavailable(r, elapsed)

        stack.redis_server.start()

        # Nothing half-way: the queue (or, with fair dispatch, the tenant's line) holds exactly the accepted
        # jobs, each with its record, and none of the refused submits left a record behind.
        with redis_client(stack) as rc:
            queued = [json.loads(m)["headers"]["id"] for m in rc.lrange("cpu", 0, -1)]
            queued += rc.hkeys(keys.dispatch("cpu", "messages"))
            assert sorted(queued) == sorted(accepted), queued
            job_keys = {k.split(":")[-1] for k in rc.scan_iter("aitasks:job:*")}
            assert job_keys == set(accepted), job_keys

        # The API reconnects without a restart (the first call may still meet a dead pooled socket).
        def submit_again() -> str | None:
            r = c.post(f"{TASKS}/submit/", json={"task_type": "diagnostic", "parameters": {"steps": 2}})
            if r.status_code == 503:
                return None
            assert r.status_code == 202, r.text
            return str(r.json()["task_id"])

        after = poll(submit_again, "the API to accept jobs again", timeout_s=30, interval_s=0.5)
        assert stack.api is not None and stack.api.alive()
        status = c.get(f"{TASKS}/{accepted[0]}/status/")
        assert status.status_code == 200 and status.json()["status"] == "PENDING", status.text
        listed = {t["task_id"] for t in c.get(f"{TASKS}/", params={"limit": 50}).json()["tasks"]}
        assert listed == {*accepted, after}, listed

        # The gpu worker lived through the outage and reconnects by itself.
        gpu_job = quick_job(c, queue="gpu")
        final = wait_end(stack, c, gpu_job)
        assert final["status"] == "SUCCESS", explain(stack, final)

        stack.start_worker("cpu")
        for task_id in [*accepted, after]:
            final = wait_end(stack, c, task_id)
            assert final["status"] == "SUCCESS", explain(stack, final)
            assert final["attempts"] == 1, final
        assert finished_counts(c) == {"SUCCESS": 5}


def test_redis_clean_restart_while_a_job_runs_the_job_still_succeeds(make_stack):
    """Redis stopped (SIGTERM) and restarted while a worker runs a job: the job's progress writes
    fail quietly, its outcome write waits for Redis, and it ends SUCCESS exactly once."""
    stack = make_stack()
    with stack.client() as c:
        task_id = submit(c, parameters={"duration_s": 5, "steps": 25})
        wait_running(stack, c, task_id)
        stack.redis_server.stop()
        r, elapsed = timed(lambda: c.get(f"{TASKS}/{task_id}/status/"))
        assert_unavailable(r, elapsed)
        time.sleep(2)
        stack.redis_server.start()

        final = wait_end(stack, c, task_id)
        assert final["status"] == "SUCCESS", explain(stack, final)
        assert result_of(c, task_id)["parameters"]["steps"] == 25
        # The worker is still serving afterwards.
        nxt = quick_job(c)
        final = wait_end(stack, c, nxt)
        assert final["status"] == "SUCCESS", explain(stack, final)
        assert finished_counts(c) == {"SUCCESS": 2}


# --- dying workers -------------------------------------------------------------------------------


def test_pool_process_killed_mid_job_runs_again_and_succeeds_once(make_stack):
    """The pool process running a job is SIGKILLed (as the OOM killer would): the message goes back
    to the queue, the job runs again in a fresh pool process and ends SUCCESS exactly once."""
    stack = make_stack()
    with stack.client() as c:
        worker = cpu_worker(stack)
        task_id = submit(c, parameters={"duration_s": 4, "steps": 40})
        wait_running(stack, c, task_id)
        victim = pool_child(stack, worker)
        os.kill(victim, signal.SIGKILL)

        final = wait_end(stack, c, task_id)
        assert final["status"] == "SUCCESS", explain(stack, final)
        assert final["attempts"] == 1, final  # a lost worker is not a failed attempt
        result = result_of(c, task_id)
        assert result["deliveries"] == 2, result
        assert result["worker_pid"] != victim, result
        rec = record(stack, task_id)
        assert (rec["deliveries"], rec["finished_deliveries"]) == ("2", "1"), rec
        assert worker.alive(), worker.tail()
        assert finished_counts(c) == {"SUCCESS": 1}


def test_pool_process_killed_with_an_idle_worker_beside_is_seen_retry_before_it_runs_again(make_stack):
    """The pool process running a job is SIGKILLed while a second worker idles on the queue, ready to take
    the message the moment Celery gives it back: the job's events go PROCESSING, RETRY, PROCESSING,
    SUCCESS (the loss is written before the message goes back, worker/request.py), never a RETRY on the
    new run."""
    stack = make_stack()
    stack.start_worker("cpu", name="worker-cpu-2")
    poll(lambda: stack.redis.zcard(keys.LEASES) >= 3, "every worker's lease", timeout_s=60)
    r = stack.redis  # kept: a client let go closes its connections, the subscription's too
    ps = every_job_subscribed(r)
    with stack.client() as c:
        task_id = submit(c, parameters={"duration_s": 3, "steps": 6})
        wait_running(stack, c, task_id)
        name = stack.redis.hget(keys.job(task_id), "worker").decode()  # its Celery node name: <name>.<pid>@host
        worker = next(w for w in stack.workers.values() if w.pid == int(name.split("@")[0].rsplit(".", 1)[1]))
        os.kill(pool_child(stack, worker), signal.SIGKILL)
        final = wait_end(stack, c, task_id)
        assert final["status"] == "SUCCESS", explain(stack, final)
    events = drain_job(ps, task_id)
    assert states(events) == ["PROCESSING", "RETRY", "PROCESSING", "SUCCESS"], events
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events), events


def test_whole_worker_killed_mid_job_is_redelivered_to_a_new_worker(make_stack):
    """The worker's whole process group is SIGKILLed mid-job (machine lost): after the visibility
    timeout the unacknowledged job is delivered again, a newly started worker runs it to SUCCESS."""
    stack = make_stack(env={"AITASKS_VISIBILITY_TIMEOUT_S": "8"})
    with stack.client() as c:
        task_id = submit(c, parameters={"duration_s": 3, "steps": 30})
        wait_running(stack, c, task_id)
        cpu_worker(stack).kill_group()
        replacement = stack.start_worker("cpu")

        final = wait_end(stack, c, task_id)
        assert final["status"] == "SUCCESS", explain(stack, final)
        result = result_of(c, task_id)
        assert result["deliveries"] == 2, result
        rec = record(stack, task_id)
        assert (rec["deliveries"], rec["finished_deliveries"]) == ("2", "1"), rec
        assert replacement.alive(), replacement.tail()
        assert finished_counts(c) == {"SUCCESS": 1}


def test_poison_job_fails_after_bounded_deliveries_and_worker_keeps_serving(make_stack):
    """A job that kills its pool process every time ends FAILURE (WorkerLost) after
    AITASKS_MAX_WORKER_LOSSES + 1 crashes instead of looping; the worker then serves a normal job."""
    stack = make_stack(env={"AITASKS_MAX_WORKER_LOSSES": "2"})
    with stack.client() as c:
        worker = cpu_worker(stack)
        main_pid = worker.pid
        poison = submit(c, parameters={"crash_times": 10})
        final = wait_end(stack, c, poison)
        assert final["status"] == "FAILURE", explain(stack, final)
        assert final["error_type"] == "WorkerLost", final
        assert "died 3 times" in final["error"], final
        r = c.get(f"{TASKS}/{poison}/result/")
        assert r.status_code == 500 and r.json()["error_type"] == "WorkerLost", r.text

        nxt = quick_job(c)
        final = wait_end(stack, c, nxt)
        assert final["status"] == "SUCCESS", explain(stack, final)
        assert result_of(c, nxt)["deliveries"] == 1

        # Three crashes, then the fourth delivery refused to run it: bounded, and never again.
        rec = record(stack, poison)
        assert rec["deliveries"] == "4", rec
        assert rec["status"] == "FAILURE", rec
        assert worker.alive() and worker.pid == main_pid, worker.tail()
        assert finished_counts(c) == {"FAILURE": 1, "SUCCESS": 1}


def test_sigterm_warm_shutdown_finishes_the_running_job(make_stack):
    """SIGTERM to a worker running a job: warm shutdown lets the job finish (SUCCESS, one delivery)
    before the worker exits; a job still queued is not taken and runs on the next worker."""
    stack = make_stack()
    with stack.client() as c:
        worker = cpu_worker(stack)
        running = submit(c, parameters={"duration_s": 4, "steps": 20})
        wait_running(stack, c, running)
        queued = quick_job(c)

        assert worker.proc is not None
        worker.proc.send_signal(signal.SIGTERM)
        try:
            code = worker.proc.wait(60)
        except Exception:
            raise AssertionError(f"worker did not exit after SIGTERM\n{stack.logs()}") from None
        assert code == 0, (code, worker.tail())

        # Finished during the warm shutdown, not handed to anyone else.
        body = c.get(f"{TASKS}/{running}/status/").json()
        assert body["status"] == "SUCCESS", explain(stack, body)
        assert result_of(c, running)["deliveries"] == 1
        body = c.get(f"{TASKS}/{queued}/status/").json()
        assert body["status"] == "PENDING", explain(stack, body)

        stack.start_worker("cpu")
        final = wait_end(stack, c, queued)
        assert final["status"] == "SUCCESS", explain(stack, final)
        assert finished_counts(c) == {"SUCCESS": 2}


# --- limits and forced cancel --------------------------------------------------------------------


LIMITS = json.dumps({"diagnostic": {"soft_time_limit_s": 1, "time_limit_s": 2}})


def test_time_limits_fail_the_job_clearly_and_the_worker_goes_on(make_stack):
    """With diagnostic limited to 1 s soft / 2 s hard: a job ignoring the soft limit is killed at the
    hard limit (FAILURE, TimeLimitExceeded, "hard time limit"), a normal long job is stopped at the
    soft limit (FAILURE, TimeLimitExceeded, "soft time limit"); neither runs again and the worker
    keeps serving."""
    stack = make_stack(env={"AITASKS_TYPE_OVERRIDES": LIMITS})
    with stack.client() as c:
        worker = cpu_worker(stack)
        hard = submit(c, parameters={"duration_s": 20, "steps": 20, "ignore_soft_limit": True})
        final = wait_end(stack, c, hard)
        assert final["status"] == "FAILURE", explain(stack, final)
        assert final["error_type"] == "TimeLimitExceeded", final
        assert "hard time limit" in final["error"], final

        soft = submit(c, parameters={"duration_s": 20, "steps": 20})
        final = wait_end(stack, c, soft)
        assert final["status"] == "FAILURE", explain(stack, final)
        assert final["error_type"] == "TimeLimitExceeded", final
        assert "soft time limit" in final["error"], final
        r = c.get(f"{TASKS}/{soft}/result/")
        assert r.status_code == 500 and "time limit" in r.json()["error"], r.text

        nxt = quick_job(c)
        final = wait_end(stack, c, nxt)
        assert final["status"] == "SUCCESS", explain(stack, final)

        for task_id in (hard, soft):
            rec = record(stack, task_id)
            assert rec["status"] == "FAILURE" and rec["deliveries"] == "1", rec
        assert worker.alive(), worker.tail()
        assert finished_counts(c) == {"FAILURE": 2, "SUCCESS": 1}


def test_forced_cancel_kills_a_job_that_ignores_it_and_the_worker_goes_on(make_stack):
    """A running job that ignores cancellation is terminated after AITASKS_CANCEL_GRACE_S (2 s in
    tests): it ends REVOKED, its pool process is replaced, it is not run again, and the worker
    serves the next job to SUCCESS."""
    stack = make_stack()
    with stack.client() as c:
        worker = cpu_worker(stack)
        task_id = submit(c, parameters={"duration_s": 60, "steps": 60, "ignore_cancel": True})
        wait_started(stack, c, task_id)
        victim = pool_child(stack, worker)

        r = c.post(f"{TASKS}/{task_id}/cancel/")
        assert r.status_code == 200, r.text
        final = wait_end(stack, c, task_id)
        assert final["status"] == "REVOKED", explain(stack, final)
        assert "terminated" in final["message"], final
        assert c.get(f"{TASKS}/{task_id}/result/").status_code == 410

        poll(lambda: victim not in worker.children() and worker.children(), "the killed pool process to be replaced")
        nxt = quick_job(c)
        final = wait_end(stack, c, nxt)
        assert final["status"] == "SUCCESS", explain(stack, final)
        assert result_of(c, nxt)["worker_pid"] != victim

        rec = record(stack, task_id)
        assert rec["status"] == "REVOKED" and rec["deliveries"] == "1", rec
        assert worker.alive(), worker.tail()
        assert finished_counts(c) == {"REVOKED": 1, "SUCCESS": 1}

