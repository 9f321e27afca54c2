"""What an open SSE stream keeps in memory while it waits (issue 22: 10,000 streams a process), and that it
still follows its job while keeping so little: the API served in this process by uvicorn with the protocol
`aitasks api` uses (api/lean_http.py), on a real Redis; the objects left alive are counted with gc."""

from __future__ import annotations

import asyncio
import collections
import gc
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import uvicorn

from aitasks.api import app as app_module
from aitasks.api.lean_http import LeanHttpToolsProtocol
from aitasks.api.routes import stream as stream_module
from aitasks.jobs import keys
from aitasks.jobs.apikeys import create_key
from aitasks.jobs.events import OVERFLOW, Mailbox, offer
from aitasks.jobs.models import Job
from aitasks.service.redis_server import RedisServer, free_port
from aitasks.settings import Settings

STREAMS = 20


async def _request(port: int, method: str, path: str, key: str, body: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    writer.write(head + body)
    return reader, writer, await reader.readuntil(b"\r\n\r\n")


async def _next_data(reader: asyncio.StreamReader) -> dict[str, Any]:
    while True:
        line = await reader.readline()
        assert line, "the stream closed"
        if line.startswith(b"data: "):
            return orjson.loads(line[6:])  # type: ignore[no-any-return]


def _count(kind: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if type(o) is kind)


def test_an_open_stream_keeps_no_job_record_nor_deques_and_still_follows_its_job(
        server: RedisServer, r: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_module, "KEEPALIVE_S", 0.3)  # the quiet re-read, soon
    settings = Settings(redis_url=server.url, data_dir=tmp_path, enable_diagnostic=True, default_max_queued=0)
    key = create_key(r, "lean-streams")

    async def run() -> tuple[int, int, int, int, dict[str, Any]]:
        port = free_port()
        config = uvicorn.Config(app_module.create_app(settings), host="127.0.0.1", port=port,
                                http=LeanHttpToolsProtocol, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=2)
        uv = uvicorn.Server(config)
        serving = asyncio.create_task(uv.serve())
        while not uv.started:
            assert not serving.done(), "uvicorn did not start"
            await asyncio.sleep(0.05)
        try:
            rd, w, head = await _request(port, "POST", "/api/v1/tasks/submit/", key, orjson.dumps(
                {"task_type": "diagnostic", "parameters": {"queue": "gpu"}}))  # no worker: stays PENDING
            assert b" 202 " in head, head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            task_id = orjson.loads(await rd.readexactly(length))["task_id"]
            w.close()
            jobs0, queues0 = _count(Job), _count(asyncio.Queue)
            streams = [await _request(port, "GET", f"/api/v1/tasks/{task_id}/events", key) for _ in range(STREAMS)]
            for reader, _, head in streams:
                assert b" 200 " in head, head
                assert (await _next_data(reader))["status"] == "PENDING"
            await asyncio.sleep(1.0)  # keepalives: each stream re-read the record, and let it go again
            jobs1, queues1 = _count(Job), _count(asyncio.Queue)
            connections = [o for o in gc.get_objects() if isinstance(o, LeanHttpToolsProtocol) and o.cycle
                           and o.cycle.scope["path"].endswith("/events") and not o.cycle.response_complete]
            assert len(connections) == STREAMS
            for c in connections:  # lists where uvicorn's own protocol has deques (~760 B each)
                assert type(c.pipeline) is not collections.deque
                assert type(c.cycle.message_event._waiters) is list  # type: ignore[attr-defined]
                assert type(c.flow._is_writable_event._waiters) is list  # type: ignore[attr-defined]
            # A change whose event was lost (written without publishing): the next quiet re-read sends it.
            r.hset(keys.job(task_id), mapping={"progress": "40", "seq": str(int(r.hget(keys.job(task_id), "seq")) + 1)})
            seen = await asyncio.wait_for(_next_data(streams[0][0]), 5)
            for _, writer, _ in streams:
                writer.close()
            return jobs0, jobs1, queues0, queues1, seen
        finally:
            uv.should_exit = True
            await serving

    jobs0, jobs1, queues0, queues1, seen = asyncio.run(asyncio.wait_for(run(), 30))
    assert seen["progress"] == 40 and seen["status"] == "PENDING", seen
    # Before issue 22's work each open stream held 2-3 Job records (~2.5 KB each) and an asyncio.Queue
    # (4 deques, ~3 KB) as its mailbox.
    assert jobs1 - jobs0 <= 1, (jobs0, jobs1)
    assert queues1 == queues0, (queues0, queues1)


def test_a_mailbox_wakes_its_reader_overflows_to_one_marker_and_loses_nothing_to_a_timeout() -> None:
    async def run() -> None:
        box = Mailbox(3)
        reader = asyncio.create_task(box.get())
        await asyncio.sleep(0)
        box.put_nowait({"seq": 1})
        assert await asyncio.wait_for(reader, 1) == {"seq": 1}
        with pytest.raises(TimeoutError):  # a wait that times out leaves no waiter behind
            async with asyncio.timeout(0.05):
                await box.get()
        box.put_nowait({"seq": 2})
        assert box.get_nowait() == {"seq": 2} and box.empty()
        for seq in range(3, 7):  # the fourth into a mailbox of 3
            offer(box, {"seq": seq})
        assert box.qsize() == 1 and box.get_nowait() is OVERFLOW

    asyncio.run(run())
