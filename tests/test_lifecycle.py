"""A job's life after it is accepted: retries with backoff, final failures, cancelling a job that waits
for its retry, and expiry of finished jobs after their retention time."""

from __future__ import annotations

import base64
import io
import json
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from aitasks.client.sse import updates
from stack import Stack, TERMINAL, queue_held, submit, wait_status

TASKS = "/api/v1/tasks"
RETRYING_IN = re.compile(r"Attempt (\d+) failed; retrying in (\d+(?:\.\d+)?)s")


# --- helpers -------------------------------------------------------------------------------------


def sse(response: httpx.Response) -> Iterator[tuple[float, dict[str, Any]]]:
    """The data messages of an SSE response with the time each arrived (monotonic), until `end`."""
    for update in updates(response.iter_lines()):
        yield time.monotonic(), update


def follow(client: httpx.Client, task_id: str, before_release: Callable[[], None] | None = None,
           timeout_s: float = 120) -> list[tuple[float, dict[str, Any]]]:
    """Every message of the task's SSE stream; ``before_release`` runs once the first one arrived."""
    with client.stream("GET", f"{TASKS}/{task_id}/events", timeout=timeout_s) as r:
        assert r.status_code == 200, r.read()
        messages = sse(r)
        out = [next(messages)]
        if before_release:
            before_release()
        out.extend(messages)
    return out


def collapse(statuses: list[str]) -> list[str]:
    """The statuses without consecutive repeats (progress reports repeat PROCESSING)."""
    return [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]


def task_type_info(url: str, name: str = "diagnostic") -> dict[str, Any]:
    r = httpx.get(f"{url}/api/v1/task-types", timeout=30)
    assert r.status_code == 200, r.text
    return next(t for t in r.json() if t["name"] == name)


def png(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(out, "PNG")
    return out.getvalue()


# --- retries ------------------------------------------------------------------------------------


@pytest.mark.slow  # waits out backoffs
def test_transient_failures_retry_with_growing_backoff_then_succeed(client):
    with queue_held(client) as release:
        task_id = submit(client, parameters={"fail_times": 2})
        released_at: list[float] = []

        def go() -> None:
            released_at.append(time.monotonic())  # no attempt can start before this
            release()

        messages = follow(client, task_id, go)

    events = [m for _, m in messages]
    assert events[0]["status"] == "PENDING", events[0]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), seqs
    assert collapse([e["status"] for e in events]) == [
        "PENDING", "PROCESSING", "RETRY", "PROCESSING", "RETRY", "PROCESSING", "SUCCESS"], events

    retries = [e for e in events if e["status"] == "RETRY"]
    assert [e["attempts"] for e in retries] == [1, 2]
    countdowns = []
    for n, e in enumerate(retries, start=1):
        assert e["error_type"] == "TransientJobError", e
        assert e["error"] == f"diagnostic transient failure {n} of 2", e
        match = RETRYING_IN.fullmatch(e["message"])
        assert match and int(match.group(1)) == n, e["message"]
        countdowns.append(float(match.group(2)))
    # Exponential backoff with jitter: 0.5 s * 2^(n-1) * [0.5, 1] (shown rounded to 0.1 s).
    assert 0.2 <= countdowns[0] <= 0.5, countdowns
    assert 0.5 <= countdowns[1] <= 1.0, countdowns
    # Each retry waits out its countdown: the third attempt cannot start before both have passed.
    third_started = next(t for t, e in messages if e["status"] == "PROCESSING" and e["attempts"] == 3)
    assert third_started - released_at[0] >= sum(countdowns) - 0.1

    final = events[-1]
    assert final["status"] == "SUCCESS" and final["attempts"] == 3 and "error" not in final
    assert final["result"]["attempts"] == 3
    status = client.get(f"{TASKS}/{task_id}/status/").json()
    assert status["status"] == "SUCCESS" and status["attempts"] == 3
    assert "error" not in status and "error_type" not in status
    r = client.get(f"{TASKS}/{task_id}/result/")
    assert r.status_code == 200 and r.json()["result"]["attempts"] == 3


@pytest.mark.slow  # waits out backoffs
def test_transient_failures_beyond_max_retries_end_in_failure(stack, client):
    max_retries = task_type_info(stack.url)["retry"]["max_retries"]
    assert max_retries >= 1
    task_id = submit(client, parameters={"fail_times": max_retries + 2})
    events = [m for _, m in follow(client, task_id)]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), seqs
    retries = [e for e in events if e["status"] == "RETRY"]
    assert retries, events  # the last retry waits at least 0.5 s: a subscriber sees it
    assert all(1 <= e["attempts"] <= max_retries for e in retries), retries

    final = wait_status(client, task_id)
    assert events[-1]["status"] == "FAILURE" and events[-1]["attempts"] == max_retries + 1
    assert final["status"] == "FAILURE", final
    assert final["attempts"] == max_retries + 1
    assert final["error_type"] == "TransientJobError"
    attempts = max_retries + 1
    assert f"failed after {attempts} attempts" in final["error"], final
    assert f"diagnostic transient failure {attempts} of {max_retries + 2}" in final["error"], final
    assert final["result_available"] is False

    r = client.get(f"{TASKS}/{task_id}/result/")
    assert r.status_code == 500, r.text
    body = r.json()
    assert body["status"] == "FAILURE" and body["attempts"] == attempts
    assert body["error_type"] == "TransientJobError" and body["error"] == final["error"]


def test_permanent_failure_is_never_retried(client):
    with queue_held(client) as release:
        # A permanent failure wins over the transient ones asked for too.
        task_id = submit(client, parameters={"fail": True, "fail_times": 3})
        events = [m for _, m in follow(client, task_id, release)]
    assert events[0]["status"] == "PENDING"
    assert collapse([e["status"] for e in events]) == ["PENDING", "PROCESSING", "FAILURE"], events
    final = client.get(f"{TASKS}/{task_id}/status/").json()
    assert final["status"] == "FAILURE" and final["attempts"] == 1
    assert final["error_type"] == "JobError"
    assert "parameters.fail=true" in final["error"]


@pytest.mark.slow  # waits out backoffs
def test_cancel_while_waiting_for_a_retry(stack, client):
    task_id = submit(client, parameters={"fail_times": 10})
    # The third attempt's backoff is 1-2 s: wide enough to cancel in.
    deadline = time.monotonic() + 60
    while True:
        waiting = client.get(f"{TASKS}/{task_id}/status/").json()
        if (waiting["status"] == "RETRY" and waiting["attempts"] == 3) or waiting["status"] in TERMINAL:
            break
        assert time.monotonic() < deadline, waiting
        time.sleep(0.02)
    assert waiting["status"] == "RETRY" and waiting["attempts"] == 3, waiting
    assert waiting["error_type"] == "TransientJobError"

    r = client.post(f"{TASKS}/{task_id}/cancel/")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "REVOKED"
    cancelled = client.get(f"{TASKS}/{task_id}/status/").json()
    assert cancelled["status"] == "REVOKED" and cancelled["finished_at"] is not None
    assert client.get(f"{TASKS}/{task_id}/result/").status_code == 410

    # The scheduled retry still reaches the worker, which drops it: no fourth attempt.
    log = stack.workers["worker-cpu"].log_path

    def dropped() -> bool:
        return any(task_id in line and "duplicate delivery dropped" in line
                   for line in log.read_text(errors="replace").splitlines())

    deadline = time.monotonic() + 60
    while not dropped():
        assert time.monotonic() < deadline, "the retry of the cancelled job never reached the worker"
        time.sleep(0.2)
    after = client.get(f"{TASKS}/{task_id}/status/").json()
    assert after["status"] == "REVOKED" and after["attempts"] == 3
    assert after["finished_at"] == cancelled["finished_at"]
    r = client.post(f"{TASKS}/{task_id}/cancel/")
    assert r.status_code == 400 and r.json()["status"] == "REVOKED"
    # The worker goes on with other jobs.
    assert wait_status(client, submit(client))["status"] == "SUCCESS"


# --- a deployment with a short retention and fewer retries ---------------------------------------

RETENTION_S = 5


@pytest.fixture(scope="module")
def short_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(Path(tmp_path_factory.mktemp("short")), env={
        "AITASKS_RETENTION_S": str(RETENTION_S),
        "AITASKS_TYPE_OVERRIDES": json.dumps({"diagnostic": {"max_retries": 1}}),
    })
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.mark.slow  # its own stack
def test_type_override_of_max_retries(short_stack):
    info = task_type_info(short_stack.url)
    assert info["retry"]["max_retries"] == 1
    assert info["limits"]["retention_s"] == RETENTION_S
    with short_stack.client() as c:
        task_id = submit(c, parameters={"fail_times": 5})
        final = wait_status(c, task_id)
        assert final["status"] == "FAILURE" and final["attempts"] == 2, final
        assert final["error_type"] == "TransientJobError"
        assert "failed after 2 attempts" in final["error"]


@pytest.mark.slow  # its own stack, waits for expiry
def test_finished_jobs_expire_after_the_retention_time(short_stack):
    with short_stack.client() as c:
        # Each is checked as soon as it ends, well inside its retention time.
        image = submit(c, image=base64.b64encode(png()).decode())
        assert wait_status(c, image)["status"] == "SUCCESS"
        result = c.get(f"{TASKS}/{image}/result/")
        assert result.status_code == 200, result.text
        assert [a["name"] for a in result.json()["result"]["artifacts"]] == ["thumbnail.png"]
        assert c.get(f"{TASKS}/{image}/artifacts/thumbnail.png").status_code == 200
        failed = submit(c, parameters={"fail": True})
        assert wait_status(c, failed)["status"] == "FAILURE"
        running = submit(c, parameters={"duration_s": 60, "steps": 240, "queue": "gpu"})
        assert wait_status(c, running, {"PROCESSING"} | TERMINAL)["status"] == "PROCESSING"
        assert c.post(f"{TASKS}/{running}/cancel/").status_code == 200
        assert wait_status(c, running)["status"] == "REVOKED"
        ids = [image, failed, running]

        finals = {i: c.get(f"{TASKS}/{i}/status/").json()["status"] for i in ids}
        deadline = time.monotonic() + 60
        r = short_stack.redis
        while any(r.exists(f"aitasks:job:{i}") for i in ids):  # Redis forgets them after the retention time
            assert time.monotonic() < deadline, "finished jobs still in Redis after 60 s"
            time.sleep(0.25)

        # Their files are gone; their history stays in the store of record (docs/history.md), same answers.
        for task_id in ids:
            for path in ("artifacts/thumbnail.png", "artifacts/input-image.png"):
                got = c.get(f"{TASKS}/{task_id}/{path}")
                assert got.status_code == 404 and got.json()["code"] == "not_found", (task_id, path, got.text)
            got = c.get(f"{TASKS}/{task_id}/status/")
            assert got.status_code == 200 and got.json()["status"] == finals[task_id], got.text
            assert c.post(f"{TASKS}/{task_id}/cancel/").status_code == 400
        # An id that never existed is 404 everywhere.
        unknown = str(uuid.uuid4())
        for got in (c.get(f"{TASKS}/{unknown}/status/"), c.get(f"{TASKS}/{unknown}/result/"),
                    c.post(f"{TASKS}/{unknown}/cancel/"), c.get(f"{TASKS}/{unknown}/events"),
                    c.get(f"{TASKS}/{unknown}/artifacts/thumbnail.png")):
            assert got.status_code == 404 and got.json()["code"] == "not_found", (got.request.url, got.text)
        listed = [t["task_id"] for t in c.get(f"{TASKS}/").json()["tasks"]]
        assert sorted(listed) == sorted(ids), listed

        # The deployment goes on: a new job runs and is listed.
        fresh = submit(c)
        assert wait_status(c, fresh)["status"] == "SUCCESS"
        assert [t["task_id"] for t in c.get(f"{TASKS}/").json()["tasks"]][0] == fresh
