"""Webhooks against receivers this test starts on 127.0.0.1: signed deliveries, retries, filters, refusals."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import pytest

from aitasks.jobs.webhooks import verify
from aitasks.jobs import keys
from local_http import LocalServer, QuietHandler
from stack import key_of, poll, submit, wait_status

TASKS = "/api/v1/tasks"


class Receiver(LocalServer):
    """An HTTP server that records what it is sent; it answers ``fail_first`` requests with 503."""

    def __init__(self, fail_first: int = 0):
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.arrived: list[float] = []  # time.time() of each request, in the order of received
        self.fail_first = fail_first
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.arrived.append(time.time())
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                failing = len(receiver.received) <= receiver.fail_first
                self.send_response(503 if failing else 204)
                self.end_headers()

        super().__init__(Handler)
        self.url = f"http://127.0.0.1:{self.port}/hook"

    def docs(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def recorded_attempts(stack, task_id: str) -> int:  # type: ignore[no-untyped-def]
    import sqlalchemy as sa

    from aitasks.store import engine as engines
    from aitasks.store.schema import webhook_deliveries

    url = stack.env().get("AITASKS_DATABASE_URL") or f"sqlite:///{stack.root / 'data' / 'aitasks.db'}"
    engine = engines.create(url)
    try:
        with engine.connect() as c:
            return int(c.scalar(sa.select(sa.func.count()).select_from(webhook_deliveries)
                                .where(webhook_deliveries.c.job_id == task_id)) or 0)
    finally:
        engine.dispose()


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
        # The log is in the store of record too: once Redis forgot the job, its status still shows it.
        poll(lambda: recorded_attempts(stack, task_id) == 3, "the attempts recorded in SQL", timeout_s=60)
        stack.redis.delete(keys.job(task_id), keys.webhook_log(task_id))
        with stack.client(key_of(c)) as again:
            forgotten = again.get(f"{TASKS}/{task_id}/status/").json()
        assert forgotten["status"] == "SUCCESS" and "cancel_requested" not in forgotten
        assert forgotten["webhook"]["deliveries"] == [{k: v for k, v in d.items() if k != "retry_in_s"} for d in log]
    finally:
        flaky.close()


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
    ({"webhook": "http://169.254.169.254/latest/meta-data"}, "webhook", "metadata"),
    ({"webhook": "http://169.254.10.1/x"}, "webhook", "link-local"),
    ({"webhook": "http://10.0.0.1/x"}, "webhook", "private"),
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


class Hostile:
    """A receiver on 127.0.0.1 that misbehaves: ``hang`` reads the request and never answers, ``drip``
    sends its answer one byte every 9 s, ``stream`` answers 200 and then streams a body forever. It records
    how long each connection lasted (until the sender hung up) and the most connections open at once."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.lock = threading.Lock()
        self.open = self.max_open = self.connections = 0
        self.durations: list[float] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        start = time.monotonic()
        with self.lock:
            self.open += 1
            self.connections += 1
            self.max_open = max(self.max_open, self.open)
        try:
            conn.recv(65536)  # the request
            if self.mode == "hang":
                conn.settimeout(60)
                while conn.recv(65536):
                    pass
            elif self.mode == "drip":
                conn.settimeout(9)
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
                    conn.sendall(bytes([byte]))
                    try:
                        if conn.recv(1) == b"":
                            break  # the sender hung up
                    except TimeoutError:
                        pass
            else:
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
                chunk, sent = b"x" * 65536, 0
                while sent < 512 * 2**20:  # "forever", bounded so a broken sender cannot eat the machine
                    conn.sendall(chunk)
                    sent += len(chunk)
        except OSError:
            pass  # the sender hung up
        finally:
            with self.lock:
                self.open -= 1
                self.durations.append(time.monotonic() - start)
            conn.close()

    def close(self) -> None:
        self.sock.close()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def finished_at(status: dict[str, Any]) -> float:
    return datetime.fromisoformat(status["finished_at"].replace("Z", "+00:00")).timestamp()


@pytest.mark.slow  # its own deployment, waits out a deadline
def test_hostile_receivers_delay_no_one_else_and_cost_no_memory(make_stack, receiver):
    """Receivers that never answer, drip a byte every 9 s or stream forever: each attempt ends by its
    10 s deadline (or after 64 KiB), one receiver gets at most 2 of the worker's attempts at once, the
    other deliveries go out at once meanwhile, and the worker's memory stays flat."""
    stack = make_stack(worker_queues=("cpu,gpu",))  # one worker: its limits are the deployment's
    worker = next(iter(stack.workers.values()))
    hang, drip, stream = Hostile("hang"), Hostile("drip"), Hostile("stream")
    try:
        with stack.client() as c:
            wait_status(c, submit(c, webhook=receiver.url))  # warm: the sender has sent once
            poll(lambda: receiver.received, "the first delivery", timeout_s=30)
            rss_before = rss_mb(worker.pid)
            for hostile in (hang,) * 4 + (drip,) * 3 + (stream,) * 3:
                submit(c, webhook=hostile.url)
            poll(lambda: hang.max_open >= 2 and drip.max_open >= 2 and len(stream.durations) >= 3,
                 "the hostile receivers' first attempts", timeout_s=30)
            started = time.monotonic()
            good = [submit(c, webhook=receiver.url) for _ in range(4)]
            statuses = {t: wait_status(c, t) for t in good}
            poll(lambda: {d["task_id"] for d in receiver.docs()} >= set(good), "the other deliveries", timeout_s=8)
            assert time.monotonic() - started < 9  # before the hostile attempts' deadline freed anything
            arrived = {d["task_id"]: at for d, at in zip(receiver.docs(), receiver.arrived)}
            late = {t: arrived[t] - finished_at(s) for t, s in statuses.items() if arrived[t] - finished_at(s) > 3}
            assert late == {}, late
            # The hanging and dripping attempts end at the deadline; the stream after 64 KiB, as a 200.
            poll(lambda: len(hang.durations) >= 2 and len(drip.durations) >= 2, "deadlines", timeout_s=20)
            assert max(hang.durations[:2] + drip.durations[:2]) < 13, (hang.durations, drip.durations)
            assert max(stream.durations[:3]) < 5, stream.durations
            assert hang.max_open <= 2 and drip.max_open <= 2, (hang.max_open, drip.max_open)
            growth = rss_mb(worker.pid) - rss_before
            assert growth < 40, f"the worker grew by {growth:.0f} MB"

            def timeouts() -> list[dict[str, Any]]:
                return [d for t in c.get(f"{TASKS}/").json()["tasks"]
                        for d in c.get(f"{TASKS}/{t['task_id']}/status/").json().get("webhook", {}).get("deliveries", [])
                        if "Timeout" in d.get("error", "") and d.get("retry_in_s") == 1]
            poll(timeouts, "a timed out attempt in a job's log, to be retried", timeout_s=10)
    finally:
        for hostile in (hang, drip, stream):
            hostile.close()
