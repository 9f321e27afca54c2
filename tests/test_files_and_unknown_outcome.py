"""Security review items 1 and 7.

1. Files uploaded through ``POST /v1/files`` live in the artifact store, not in Redis: Redis keeps only their
   record, and the workers' sweep removes the bytes once the record is gone.
7. An outcome unknown is not a failure: when Redis ran the CREATE script but its reply was lost, the API
   keeps the job's inputs and answers ``503`` with the job's id; a resend with the same Idempotency-Key
   returns that job (which runs with its inputs), so exactly one job exists.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import replicate
from PIL import Image
from replicate.exceptions import ReplicateError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aitasks.api.submission import maybe_applied
from aitasks.jobs import keys
from aitasks.jobs.artifacts import ArtifactStore
from aitasks.jobs.pipelined import OutcomeUnknown, PipelinedRedis
from aitasks.service.logged_process import LoggedProcess
from aitasks.service.redis_server import RedisServer, free_port
from stack import Stack, wait_status
from test_image_jobs import coffee, png

MiB = 1024 * 1024


# --- 1. files in the artifact store ---------------------------------------------------------------


def noise_png(min_bytes: int) -> bytes:
    """A valid PNG of at least ``min_bytes`` (random pixels, stored without compression)."""
    side = int((min_bytes / 3) ** 0.5) + 2
    pixels = np.random.default_rng(7).integers(0, 256, (side, side, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=0)
    assert out.tell() >= min_bytes
    return out.getvalue()


@pytest.fixture
def rc(stack: Stack) -> Iterator[replicate.Client]:
    client = replicate.Client(api_token=stack.new_key(), base_url=stack.url)
    yield client
    client._client.close()


@pytest.mark.slow
def test_uploads_do_not_grow_redis_and_still_download_and_run(rc: replicate.Client, stack: Stack) -> None:
    picture = noise_png(8 * MiB)
    blobs = [picture] + [os.urandom(8 * MiB) for _ in range(5)]
    before = int(stack.redis.info("memory")["used_memory"])
    uploaded = [rc.files.create(io.BytesIO(b), filename=f"f{i}.bin") for i, b in enumerate(blobs)]
    grown = int(stack.redis.info("memory")["used_memory"]) - before
    assert grown < 4 * MiB, f"Redis grew by {grown / MiB:.1f} MiB for 48 MiB of uploads"

    for f, data in zip(uploaded, blobs):
        assert f.size == len(data)
        assert rc._client.get(f"/v1/files/{f.id}/download").content == data
    out = rc.run("aitasks/diagnostic", input={"image": uploaded[0].urls["get"]})
    assert out["image"]["bytes"] == len(picture) and out["image"]["width"] > 1600


def test_an_expired_upload_is_swept_and_job_folders_are_not(rc: replicate.Client, stack: Stack) -> None:
    data = png(coffee())
    f = rc.files.create(io.BytesIO(data), filename="coffee.png")
    store = ArtifactStore(stack.root / "data" / "artifacts")
    tenant = stack.redis.hget(keys.replicate_file(f.id), "tenant").decode()
    path = store.file_path(tenant, f.id)
    assert path.read_bytes() == data
    assert b"data" not in stack.redis.hkeys(keys.replicate_file(f.id))  # only metadata in Redis

    def exists(ids: list[str], key: Any) -> list[bool]:
        return [bool(stack.redis.exists(key(i))) for i in ids]

    store.sweep_files(lambda ids: exists(ids, keys.replicate_file), min_age_s=0)
    assert path.exists()  # its record lives
    stack.redis.delete(keys.replicate_file(f.id))  # what its expiry does
    assert store.sweep_files(lambda ids: exists(ids, keys.replicate_file), min_age_s=0) >= 1
    assert not path.exists()
    with pytest.raises(ReplicateError) as err:
        rc.files.get(f.id)
    assert err.value.status == 404

    # The jobs' sweep never takes the uploads' area for an expired job's folder.
    other = rc.files.create(io.BytesIO(data), filename="again.png")
    store.sweep(lambda ids: exists(ids, keys.job), min_age_s=0)
    assert store.file_path(tenant, other.id).read_bytes() == data


# --- 7. outcome unknown: which errors mean "Redis may have run it" --------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    s = RedisServer(tmp_path / "redis", appendonly=False).start()
    yield s
    if s.proc is not None and s.proc.poll() is None:
        os.kill(s.proc.pid, signal.SIGCONT)
    s.kill()


def test_a_sent_command_without_reply_is_outcome_unknown_a_refused_one_is_not(
        redis_server: RedisServer) -> None:
    assert redis_server.proc is not None

    async def main() -> tuple[BaseException, BaseException]:
        refused = PipelinedRedis(f"redis://127.0.0.1:{free_port()}/0")
        try:
            await refused.execute("PING")
        except RedisConnectionError as exc:
            never_sent: BaseException = exc
        pipe = PipelinedRedis(redis_server.url, reply_timeout_s=0.3)
        try:
            assert await pipe.execute("PING") == b"PONG"
            os.kill(redis_server.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
            try:
                await pipe.execute("SET", "k", "v")
            except RedisTimeoutError as exc:
                lost: BaseException = exc
            os.kill(redis_server.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        finally:
            await pipe.aclose()
        return never_sent, lost

    never_sent, lost = asyncio.run(main())
    assert not isinstance(never_sent, OutcomeUnknown) and not maybe_applied(never_sent, pipelined=True)
    assert isinstance(lost, OutcomeUnknown) and maybe_applied(lost, pipelined=True)
    # redis-py's own errors (rediss:// URLs): a failed connect was never sent; a read timeout was.
    assert not maybe_applied(RedisConnectionError("Error 111 connecting to 127.0.0.1:1. Refused."), False)
    assert maybe_applied(RedisTimeoutError("Timeout reading from socket"), False)


# --- 7. outcome unknown, end to end: a reply held back by a proxy ---------------------------------


class ReplyHoldingProxy:
    """TCP proxy in front of Redis. Armed with a marker, it forwards the first request that carries the
    marker and then drops every reply on that connection, as a network that lost Redis's answer."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.marker: bytes | None = None
        self.held = threading.Event()
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, marker: bytes) -> None:
        self.marker = marker

    def close(self) -> None:
        self.closing = True
        self.listener.close()

    def _accept(self) -> None:
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            state = {"hold": False}
            threading.Thread(target=self._requests, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._replies, args=(server, client, state), daemon=True).start()

    def _requests(self, src: socket.socket, dst: socket.socket, state: dict[str, bool]) -> None:
        tail = b""
        try:
            while chunk := src.recv(65536):
                seen = tail + chunk
                if self.marker is not None and self.marker in seen:
                    self.marker = None  # once: the resend goes through
                    state["hold"] = True
                    self.held.set()
                tail = seen[-256:]
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            _close(src, dst)

    def _replies(self, src: socket.socket, dst: socket.socket, state: dict[str, bool]) -> None:
        try:
            while chunk := src.recv(65536):
                if not state["hold"]:
                    dst.sendall(chunk)
        except OSError:
            pass
        finally:
            _close(src, dst)


def _close(*socks: socket.socket) -> None:
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()


PROXIED_OUTBOX_MB = "0"  # this module tests the answer without an outbox


@pytest.fixture
def proxied(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Stack, ReplyHoldingProxy]]:
    """A deployment whose API reaches Redis through the proxy (its workers directly), with a short
    Redis timeout so the held reply times out quickly. The outbox is as the test's module says
    (``PROXIED_OUTBOX_MB``): off here, where the 503 of an unknown outcome is tested; on in test_outbox.py."""
    env = {"AITASKS_REDIS_TIMEOUT_S": "1.0"}
    outbox_mb = getattr(request.module, "PROXIED_OUTBOX_MB", None)
    if outbox_mb is not None:
        env["AITASKS_OUTBOX_MAX_MB"] = outbox_mb
    s = Stack(tmp_path / "stack", env=env)
    proxy: ReplyHoldingProxy | None = None
    try:
        s.redis_server.start()
        for queue in s.worker_queues:
            s.start_worker(queue)
        proxy = ReplyHoldingProxy(s.redis_server.port)
        port = s.redis_server.port
        s.extra_env["AITASKS_REDIS_URL"] = s.redis_server.url.replace(f":{port}/", f":{proxy.port}/")
        command = [sys.executable, "-m", "aitasks.cli.main", "api"]
        s.api = LoggedProcess("api", command, s.env(), s.root).start()
        s.wait_ready()
        yield s, proxy
    finally:
        s.stop()
        if proxy is not None:
            proxy.close()


@pytest.mark.slow
def test_a_lost_reply_keeps_the_job_and_the_resend_finds_it(proxied: tuple[Stack, ReplyHoldingProxy]) -> None:
    s, proxy = proxied
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    idem = f"order-{uuid.uuid4().hex}"
    image = png(coffee())
    body = {"task_type": "diagnostic", "image": base64.b64encode(image).decode()}
    with s.client() as other:  # Redis learns the CREATE script (else the held reply would be NOSCRIPT)
        assert other.post("/api/v1/tasks/submit/", json={"task_type": "diagnostic"}).status_code == 202
    with s.client(tenant=tenant) as client:
        digest = hashlib.sha256(idem.encode()).hexdigest()
        proxy.arm(keys.idempotency(tenant, digest).encode())  # the CREATE call names this key
        t0 = time.monotonic()
        r = client.post("/api/v1/tasks/submit/", json=body, headers={"Idempotency-Key": idem})
        assert proxy.held.is_set(), "the proxy never saw the create"
        assert r.status_code == 503, r.text
        assert r.headers.get("Retry-After")
        task_id = r.json()["task_id"]
        assert task_id in r.json()["error"] and "Idempotency-Key" in r.json()["error"]
        assert time.monotonic() - t0 < 10
        # Redis did run it: the record exists and its input was kept.
        assert s.redis.exists(keys.job(task_id))
        assert (s.root / "data" / "artifacts" / task_id / "input-image.png").read_bytes() == image

        again = client.post("/api/v1/tasks/submit/", json=body, headers={"Idempotency-Key": idem})
        assert again.status_code == 200, again.text
        assert again.json()["task_id"] == task_id

        done = wait_status(client, task_id)
        assert done["status"] == "SUCCESS", done
        result = client.get(f"/api/v1/tasks/{task_id}/result/").json()
        assert result["result"]["image"]["sha256"] == hashlib.sha256(image).hexdigest()  # its input intact
        assert s.redis.zcard(keys.tenant_index(tenant)) <= 1  # one job (0 once recorded: it left the index)
        listed = client.get("/api/v1/tasks/").json()["tasks"]
        assert [t["task_id"] for t in listed] == [task_id]
