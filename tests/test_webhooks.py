"""Webhooks against receivers this test starts on 127.0.0.1: signed deliveries, retries, filters, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest

from aitasks.jobs.webhooks import verify
from stack import poll, submit, wait_status

TASKS = "/api/v1/tasks"


class Receiver:
    """An HTTP server that records what it is sent; it answers ``fail_first`` requests with 503."""

    def __init__(self, fail_first: int = 0):
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                failing = len(receiver.received) <= receiver.fail_first
                self.send_response(503 if failing else 204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def docs(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def tenant_secret(stack, tenant: str) -> str:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in stack.env().items()}
    out = subprocess.run([sys.executable, "-m", "aitasks.cli.main", "keys", "secret", "--tenant", tenant],
                         env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.slow  # seconds of waiting
def test_completed_is_delivered_signed_with_the_tenants_secret(stack, receiver):
    tenant = f"hooks-{os.getpid()}-a"
    with stack.client(tenant=tenant) as c:
        task_id = submit(c, parameters={"steps": 2}, webhook=receiver.url)
        assert wait_status(c, task_id)["status"] == "SUCCESS"
        poll(lambda: receiver.received, "the webhook", timeout_s=30)
        headers, body = receiver.received[0]
        secret = tenant_secret(stack, tenant)
        assert secret.startswith("whsec_") and verify(secret, headers, body)
        assert not verify(secret, headers, body.replace(b"SUCCESS", b"FAILURE"))  # tampering shows
        doc = json.loads(body)
        assert doc["task_id"] == task_id and doc["status"] == "SUCCESS" and doc["event"] == "completed"
        assert doc["result"]["parameters"]["steps"] == 2
        assert headers["webhook-id"].startswith(task_id)
        # The delivery and its outcome are on the job.
        status = poll(lambda: (s := c.get(f"{TASKS}/{task_id}/status/").json())["webhook"]["deliveries"] and s,
                      "the delivery log")
        assert status["webhook"]["url"] == receiver.url and status["webhook"]["events"] == ["completed"]
        assert status["webhook"]["deliveries"][0] | {"at": None} == {
            "event": "completed", "attempt": 1, "status_code": 204, "delivered": True, "at": None}
    # Another tenant's secret does not verify it.
    assert not verify(tenant_secret(stack, f"hooks-{os.getpid()}-b"), headers, body)


@pytest.mark.slow  # waits out backoffs
def test_failing_receiver_is_retried_with_backoff_until_it_accepts(stack):
    flaky = Receiver(fail_first=2)
    try:
        with stack.client() as c:
            task_id = submit(c, webhook=flaky.url)
            assert wait_status(c, task_id)["status"] == "SUCCESS"
            deliveries = poll(lambda: [d for d in c.get(f"{TASKS}/{task_id}/status/").json()["webhook"]["deliveries"]
                                       if d["delivered"]], "a successful delivery", timeout_s=60)
            log = c.get(f"{TASKS}/{task_id}/status/").json()["webhook"]["deliveries"]
        assert [(d["attempt"], d["status_code"], d["delivered"]) for d in log] == [
            (1, 503, False), (2, 503, False), (3, 204, True)]
        assert [d.get("retry_in_s") for d in log[:2]] == [1, 2]
        assert len(deliveries) == 1 and len(flaky.received) == 3
        ids = {h["webhook-id"] for h, _ in flaky.received}
        assert len(ids) == 1  # one message, retried: receivers can deduplicate by id
    finally:
        flaky.server.shutdown()
        flaky.server.server_close()


@pytest.mark.slow  # seconds of waiting
def test_events_filter_start_progress_completed_in_order(stack, receiver):
    with stack.client() as c:
        task_id = submit(c, parameters={"duration_s": 1.5, "steps": 3}, webhook=receiver.url,
                         webhook_events_filter=["start", "progress", "completed"])
        assert wait_status(c, task_id)["status"] == "SUCCESS"
        poll(lambda: any(d["event"] == "completed" for d in receiver.docs()), "the completed webhook")
    # Several workers deliver in parallel: receivers order by seq (also in webhook-id).
    docs = sorted(receiver.docs(), key=lambda d: d["seq"])
    assert [d["seq"] for d in docs] == sorted({d["seq"] for d in docs})  # each change once
    events = [d["event"] for d in docs]
    assert events[0] == "start" and events[-1] == "completed" and set(events[1:-1]) == {"progress"}
    assert [d["status"] for d in docs] == ["PROCESSING"] * (len(docs) - 1) + ["SUCCESS"]
    progress = [d["progress"] for d in docs[:-1]]
    assert progress == sorted(progress)  # each document as it was at its change
    assert all(h["webhook-id"] == f"{d['task_id']}:{d['seq']}:{d['event']}"
               for (h, _), d in zip(receiver.received, receiver.docs()))


def test_the_job_never_waits_for_a_slow_or_dead_receiver(stack):
    with stack.client() as c:
        task_id = submit(c, webhook="http://127.0.0.1:9/nothing-listens-here")
        assert wait_status(c, task_id, timeout_s=30)["status"] == "SUCCESS"
        log = poll(lambda: c.get(f"{TASKS}/{task_id}/status/").json()["webhook"]["deliveries"], "a failed attempt")
        assert log[0]["delivered"] is False and "error" in log[0] and log[0]["retry_in_s"] == 1


@pytest.mark.parametrize("body,field,reason", [
    ({"webhook": "ftp://example.com/x"}, "webhook", "http"),
    ({"webhook": "http://169.254.169.254/latest/meta-data"}, "webhook", "link-local"),
    ({"webhook": "http://[fe80::1]/x"}, "webhook", "link-local"),
    ({"webhook": "http://0.0.0.0:8080/x"}, "webhook", "unspecified"),
    ({"webhook": "http://no-such-host.invalid/x"}, "webhook", "does not resolve"),
    ({"webhook": "https://example.com/x", "webhook_events_filter": ["finished"]}, "webhook_events_filter", "unknown"),
    ({"webhook": "https://example.com/x", "webhook_events_filter": []}, "webhook_events_filter", "non-empty"),
    ({"webhook_events_filter": ["completed"]}, "webhook_events_filter", "needs a webhook"),
])
def test_bad_webhooks_are_refused_at_submit(client, body, field, reason):
    r = client.post(f"{TASKS}/submit/", json={"task_type": "diagnostic", **body})
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["fields"][0]["field"] == field and reason in err["error"], err
    assert client.get(f"{TASKS}/").json()["tasks"] == []  # nothing accepted


def test_the_services_own_redis_is_refused(stack, client):
    redis_port = urlsplit(stack.redis_server.url).port
    for host in ("127.0.0.1", "localhost"):
        r = client.post(f"{TASKS}/submit/", json={"task_type": "diagnostic", "webhook": f"http://{host}:{redis_port}/"})
        assert r.status_code == 400 and "own Redis" in r.json()["error"], r.text


def test_a_comparison_reports_each_finished_child_as_progress(stack, receiver):
    """A parent's progress comes from its children's ends (the UPDATE script), and its webhook hears it."""
    from pictures import b64, coffee, png

    variants = [{"task_type": "diagnostic", "parameters": {"steps": 1}} for _ in range(3)]
    with stack.client() as c:
        r = c.post(f"{TASKS}/submit/", json={
            "task_type": "comparison", "image": b64(png(coffee())), "parameters": {"variants": variants},
            "webhook": receiver.url, "webhook_events_filter": ["progress", "completed"]})
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        assert wait_status(c, task_id, timeout_s=120)["status"] == "SUCCESS"
        poll(lambda: any(d["event"] == "completed" for d in receiver.docs()), "the completed webhook")
    docs = sorted((d for d in receiver.docs() if d["task_id"] == task_id), key=lambda d: d["seq"])
    counted = [d for d in docs if d["event"] == "progress" and "child jobs finished" in (d.get("message") or "")]
    assert [d["message"] for d in counted] == [f"{n} of 3 child jobs finished" for n in (1, 2, 3)], docs
    assert [d["progress"] for d in counted] == [33, 66, 99]
    assert docs[-1]["event"] == "completed" and docs[-1]["status"] == "SUCCESS"


@pytest.mark.slow  # its own stack, kills a worker
def test_a_delivery_taken_by_a_worker_that_dies_is_sent_again(make_stack):
    """The worker holding a delivery (its POST in progress) is SIGKILLed with its pool: once its
    heartbeat expires another worker queues the delivery again and sends it, with the same webhook-id,
    and the job's delivery log shows it delivered (at least once, not at most once)."""
    release = threading.Event()
    received: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append(({k.lower(): v for k, v in self.headers.items()}, body))
            if len(received) == 1:
                release.wait(30)  # hold the first attempt until its sender is dead
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        stack = make_stack()
        with stack.client() as c, stack.redis as r:
            task_id = submit(c, webhook=url)
            assert wait_status(c, task_id)["status"] == "SUCCESS"
            poll(lambda: received, "the first attempt", timeout_s=30)
            holders = [name.decode() for name in r.smembers("aitasks:webhooks:owners")
                       if r.llen(f"aitasks:webhooks:inflight:{name.decode()}")]
            assert len(holders) == 1, holders
            holder_pid = int(holders[0].split("@")[0].split(".")[-1])
            holder = next(w for w in stack.workers.values() if w.pid == holder_pid)
            holder.kill_group()
            release.set()

            poll(lambda: len(received) >= 2, "the delivery again, from another worker", timeout_s=60)
            deliveries = poll(lambda: [d for d in c.get(f"{TASKS}/{task_id}/status/").json()["webhook"]["deliveries"]
                                       if d["delivered"]], "the delivery in the job's log", timeout_s=30)
            assert r.llen(f"aitasks:webhooks:inflight:{holders[0]}") == 0
            assert holders[0].encode() not in r.smembers("aitasks:webhooks:owners")
        first, again = received[0][0], received[1][0]
        assert first["webhook-id"] == again["webhook-id"] == f"{task_id}:{json.loads(received[1][1])['seq']}:completed"
        assert json.loads(received[1][1])["status"] == "SUCCESS"
        assert [d["attempt"] for d in deliveries] == [1]
    finally:
        release.set()
        server.shutdown()
        server.server_close()


@pytest.mark.slow  # seconds of waiting
def test_the_completed_body_carries_the_results_links_as_the_result_endpoint_does(stack, receiver):
    """One builder of the status document: the webhook's result lists the artifacts with their URLs,
    as ``/result/`` does (without the inlined image)."""
    import numpy as np

    from pictures import b64, png

    with stack.client() as c:
        image = np.full((32, 48, 3), 200, dtype=np.uint8)
        task_id = submit(c, parameters={"steps": 1}, image=b64(png(image)), webhook=receiver.url)
        assert wait_status(c, task_id)["status"] == "SUCCESS"
        poll(lambda: receiver.received, "the webhook", timeout_s=30)
        sent = receiver.docs()[0]["result"]
        shown = c.get(f"{TASKS}/{task_id}/result/").json()["result"]
    assert [a["name"] for a in sent["artifacts"]] == ["thumbnail.png"]
    assert sent["artifacts"] == shown["artifacts"]
    assert sent["artifacts"][0]["url"] == f"{stack.url}{TASKS}/{task_id}/artifacts/thumbnail.png"
    assert "image_data" not in sent and shown["image_data"]
