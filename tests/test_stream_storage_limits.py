"""Issue 18's max_streams and max_storage_mb, and the RateLimit-* headers of accepted submits: real Redis, API
processes and workers. Streams: SSE (the lean path), WebSockets and waiting submits share one count across API
processes, 429 over it, and a SIGKILLed API process's streams stop counting once their lease ends. Storage:
uploads over it answer 413 naming the limit before anything is stored, a full tenant's submits 507, a job whose
output overflows fails naming it, and deletes give the bytes back. /api/v1/limits shows only the caller's."""

from __future__ import annotations

import io
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from aitasks.service.logged_process import LoggedProcess as Process
from aitasks.service.redis_server import free_port
from stack import Stack, key_of, poll, submit, wait_status, ws_open, ws_recv, ws_refused
from test_tenant_limits import TASKS, new_tenant, set_limits

MB = 1024 * 1024


def usage(client: httpx.Client) -> dict[str, Any]:
    r = client.get("/api/v1/limits")
    assert r.status_code == 200, r.text
    return r.json()["usage"]  # type: ignore[no-any-return]


def noise_png(side: int) -> bytes:
    """A PNG that does not compress: about 3 * side² bytes."""
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buf, "PNG")
    return buf.getvalue()


def upload(client: httpx.Client, data: bytes) -> httpx.Response:
    return client.post("/v1/files", files={"content": ("blob.bin", data, "application/octet-stream")})


@pytest.fixture
def long_job(stack: Stack) -> Iterator[tuple[httpx.Client, str]]:
    """A tenant with max_streams 2 and a long job (on the gpu queue, which the other tests here leave alone):
    its streams stay open until the test closes them."""
    tenant = new_tenant()
    set_limits(stack, tenant, "--max-streams", "2")
    with stack.client(tenant=tenant) as client:
        job = submit(client, parameters={"duration_s": 300, "steps": 300, "queue": "gpu"})
        try:
            yield client, job
        finally:
            client.post(f"{TASKS}/{job}/cancel/")


class OpenSse:
    """An SSE stream held open (its line iterator kept: dropping it would close the connection)."""

    def __init__(self, client: httpx.Client, job: str):
        self.stream = client.stream("GET", f"{TASKS}/{job}/events")
        response = self.stream.__enter__()
        assert response.status_code == 200
        self.lines = response.iter_lines()
        next(line for line in self.lines if line.startswith("data:"))  # served: its slot is taken

    def close(self) -> None:
        self.stream.__exit__(None, None, None)


def _open_sse(client: httpx.Client, job: str) -> OpenSse:
    return OpenSse(client, job)


def test_sse_websockets_and_waiting_submits_share_max_streams(stack: Stack, long_job: tuple[httpx.Client, str]) -> None:
    client, job = long_job
    key = key_of(client)
    sse = _open_sse(client, job)
    with ws_open(stack, f"{TASKS}/{job}/ws", key) as ws:
        ws_recv(ws)  # its first state: open, counted
        assert usage(client)["streams"] == 2
        refused = client.get(f"{TASKS}/{job}/events")
        assert refused.status_code == 429, refused.text
        body = refused.json()
        assert (body["code"], body["limit"], body["max_streams"], body["streams"]) == ("rate_limited", "max_streams",
                                                                                      2, 2)
        assert body["fields"][0]["field"] == "max_streams" and refused.headers["Retry-After"] == "1"
        message, code = ws_refused(stack, f"{TASKS}/{job}/ws", key)
        assert code == 4429 and message["limit"] == "max_streams" and message["streams"] == 2
        before = usage(client)["queued"]
        waiting = client.post(f"{TASKS}/submit/", json={"task_type": "diagnostic"}, headers={"Prefer": "wait=5"})
        assert waiting.status_code == 429 and waiting.json()["limit"] == "max_streams", waiting.text
        assert usage(client)["queued"] == before  # refused before its job was accepted
        assert submit(client)  # a submit that does not wait holds no stream
        with stack.client(tenant=new_tenant()) as other:
            assert usage(other)["streams"] == 0  # another tenant's count is its own
    sse.close()
    poll(lambda: usage(client)["streams"] == 0, "the closed SSE stream and WebSocket released their slots")
    again = _open_sse(client, job)  # a slot is free again
    try:
        assert usage(client)["streams"] == 1
    finally:
        again.close()


def test_a_sigkilled_api_process_streams_stop_counting(stack: Stack, long_job: tuple[httpx.Client, str],
                                                      tmp_path: Path) -> None:
    """A second API process (lease 2 s) holds both slots and is SIGKILLed: no code of it runs again, yet its
    streams stop counting once their lease ends, and the first API process opens streams again."""
    client, job = long_job
    port = free_port()
    second = Process("api-2", [sys.executable, "-m", "aitasks.cli.main", "api"],
                     {**stack.env(), "AITASKS_PORT": str(port), "AITASKS_STREAM_LEASE_S": "2"}, tmp_path).start()
    try:
        poll(lambda: _ready(f"http://127.0.0.1:{port}"), "the second API process ready")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=dict(client.headers), timeout=30) as via:
            streams = [_open_sse(via, job), _open_sse(via, job)]
            assert client.get(f"{TASKS}/{job}/events").status_code == 429  # seen by the first process too
            # While it lives, it renews their leases: they count on past the first lease's end.
            key = f"aitasks:tenant:{client.get('/api/v1/limits').json()['tenant']}:streams"
            first_end_ms = max(end for _, end in stack.redis.zrange(key, 0, -1, withscores=True))
            poll(lambda: _outlived_first_lease(stack, key, first_end_ms), "the streams' leases renewed", 60)
            assert usage(client)["streams"] == 2
            second.stop(signal.SIGKILL, 10)
            poll(lambda: usage(client)["streams"] == 0, "the killed process's streams no longer count", 60)
            for stream in streams:
                stream.close()
    finally:
        if second.alive():
            second.stop(signal.SIGKILL, 10)
    first = _open_sse(client, job)
    first.close()


def _outlived_first_lease(stack: Stack, key: str, first_end_ms: float) -> bool:
    """Redis's clock is past the end of the leases first seen, and both streams still hold a live one."""
    seconds, micros = stack.redis.time()
    now_ms = seconds * 1000 + micros / 1000
    ends = [end for _, end in stack.redis.zrange(key, 0, -1, withscores=True)]
    return now_ms > first_end_ms and len(ends) == 2 and min(ends) > now_ms


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_storage_over_max_storage_mb_answers_413_and_a_delete_gives_it_back(stack: Stack) -> None:
    tenant = new_tenant()
    set_limits(stack, tenant, "--max-storage-mb", "1")
    with stack.client(tenant=tenant) as client, stack.client(tenant=new_tenant()) as other:
        first = upload(client, b"x" * (600 * 1024))
        assert first.status_code == 201, first.text
        assert usage(client)["storage_bytes"] == 600 * 1024
        over = upload(client, b"y" * (600 * 1024))
        assert over.status_code == 413, over.text
        body = over.json()
        assert body["limit"] == "max_storage_mb" and body["max_storage_mb"] == 1
        assert body["storage_used_bytes"] == 600 * 1024 and "max_storage_mb" in body["error"]
        image = noise_png(400)  # ~480 KB more: over with the file above
        job = client.post(f"{TASKS}/submit/", data={"task_type": "diagnostic"},
                          files={"image": ("x.png", image, "image/png")})
        assert job.status_code == 413 and job.json()["fields"][0]["field"] == "max_storage_mb", job.text
        document = client.post("/api/v1/documents/", files={"file": ("a.txt", b"word " * 100_000, "text/plain")})
        assert document.status_code == 413 and document.json()["limit"] == "max_storage_mb", document.text
        assert usage(client)["storage_bytes"] == 600 * 1024  # nothing of the refused ones counted
        assert usage(other)["storage_bytes"] == 0  # isolation: B's /limits never shows A's
        assert upload(other, b"z" * (600 * 1024)).status_code == 201  # and A's usage does not limit B

        assert client.delete(f"/v1/files/{first.json()['id']}").status_code in (200, 204)
        assert usage(client)["storage_bytes"] == 0
        accepted = client.post(f"{TASKS}/submit/", data={"task_type": "diagnostic"},
                               files={"image": ("x.png", image, "image/png")})
        assert accepted.status_code == 202, accepted.text
        assert usage(client)["storage_bytes"] == len(image)


def test_a_full_tenant_submits_507_and_an_overflowing_output_fails_its_job(stack: Stack) -> None:
    tenant = new_tenant()
    set_limits(stack, tenant, "--max-storage-mb", "1")
    image = noise_png(64)
    with stack.client(tenant=tenant) as client:
        full = upload(client, b"x" * MB)  # exactly the limit: stored
        assert full.status_code == 201, full.text
        refused = client.post(f"{TASKS}/submit/", json={"task_type": "diagnostic"})
        assert refused.status_code == 507, refused.text
        assert refused.json()["limit"] == "max_storage_mb" and refused.json()["storage_used_bytes"] == MB
        assert client.delete(f"/v1/files/{full.json()['id']}").status_code in (200, 204)

        # Room for the input, not for the thumbnail the job makes of it: the job fails naming the limit.
        room = upload(client, b"x" * (MB - len(image) - 10))
        assert room.status_code == 201, room.text
        job = client.post(f"{TASKS}/submit/", data={"task_type": "diagnostic"},
                          files={"image": ("x.png", image, "image/png")})
        assert job.status_code == 202, job.text
        final = wait_status(client, job.json()["task_id"], timeout_s=120)
        assert final["status"] == "FAILURE" and "max_storage_mb" in str(final), final
        assert usage(client)["storage_bytes"] == MB - 10  # the refused output was never counted


def test_accepted_submits_carry_the_ratelimit_headers_when_the_tenant_has_a_rate(stack: Stack) -> None:
    tenant = new_tenant()
    set_limits(stack, tenant, "--submits-per-s", "0.01", "--burst", "10")
    with stack.client(tenant=tenant) as client, stack.client(tenant=new_tenant()) as unlimited:
        answers = [client.post(f"{TASKS}/submit/", json={"task_type": "diagnostic"}),
                   client.post("/v1/predictions", json={"version": "aitasks/diagnostic", "input": {}}),
                   client.post("/api/v1/documents/", files={"file": ("a.txt", b"hello", "text/plain")}),
                   client.post("/api/v1/documents/batch", files=[("file", ("b.txt", b"one", "text/plain")),
                                                                 ("file", ("c.txt", b"two", "text/plain"))])]
        for left, answer in zip((9, 8, 7, 5), answers):  # the batch took two
            assert answer.status_code in (201, 202), (answer.request.url, answer.text)
            assert answer.headers["RateLimit-Limit"] == "10" and answer.headers["RateLimit-Policy"] == "10;w=1000"
            assert answer.headers["RateLimit-Remaining"] == str(left), answer.request.url
            assert int(answer.headers["RateLimit-Reset"]) > 0
        plain = unlimited.post(f"{TASKS}/submit/", json={"task_type": "diagnostic"})
        assert plain.status_code == 202 and "RateLimit-Limit" not in plain.headers


def test_a_deleted_document_gives_its_bytes_back(stack: Stack) -> None:
    tenant = new_tenant()
    set_limits(stack, tenant, "--max-storage-mb", "5")
    text = b"some words to store " * 5_000
    with stack.client(tenant=tenant) as client:
        doc = client.post("/api/v1/documents/", files={"file": ("a.txt", text, "text/plain")})
        assert doc.status_code == 202, doc.text
        assert usage(client)["storage_bytes"] == len(text)  # its file, stored as its ingestion job's input
        document_id = doc.json()["document_id"]
        deleted = client.delete(f"/api/v1/documents/{document_id}")
        assert deleted.status_code == 200, deleted.text
        assert usage(client)["storage_bytes"] == 0
