"""The Python client (``aitasks.Client``, ``aitasks.AsyncClient``) against a real deployment."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage import data as samples

from aitasks import AsyncClient, Client
from aitasks.client import (
    ApiError,
    ConnectionFailed,
    JobCancelled,
    JobFailed,
    NotFound,
    Unauthorized,
    ValidationError,
    WaitTimeout,
    sse,
)
from aitasks.service.redis_server import free_port


@pytest.fixture
def api(stack):  # type: ignore[no-untyped-def]
    with Client(stack.url, api_key=stack.new_key()) as c:
        yield c


def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(np.asarray(Image.fromarray(samples.astronaut()).resize((128, 128)))).save(path)
    return path


def test_submit_wait_with_progress_and_events(api):
    seen: list[dict[str, Any]] = []
    job = api.submit("diagnostic", parameters={"duration_s": 1, "steps": 5})
    result = job.wait(on_progress=seen.append)
    assert result["parameters"]["steps"] == 5 and result["attempts"] == 1
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress) and seen[-1]["status"] == "SUCCESS"
    assert any(s["status"] == "PROCESSING" for s in seen)
    assert job.status()["status"] == "SUCCESS" and job.result() == result
    # A finished job's stream still yields its state, then ends.
    assert [e["status"] for e in job.events()][-1] == "SUCCESS"


def test_files_are_uploaded_and_artifacts_downloaded(api, tmp_path):
    source = photo(tmp_path)
    job = api.submit("style_transfer", image=source, parameters={"style": "cartoon"})
    result = job.wait(timeout=120)
    assert result["metadata"]["style"] == "cartoon"
    assert "result.png" in job.artifacts()
    saved = job.download("result.png", tmp_path)
    with Image.open(saved) as img, Image.open(source) as src:
        out, before = np.asarray(img), np.asarray(src)
    assert out.shape == (128, 128, 3)
    assert np.abs(out.astype(int) - before.astype(int)).mean() > 5
    assert job.download("input-image.png", tmp_path / "in.png").read_bytes() == source.read_bytes()
    # bytes work as well as paths
    raw = io.BytesIO()
    with Image.open(source) as src:
        src.save(raw, "PNG")
    assert api.run("style_transfer", image=raw.getvalue(), parameters={"style": "detail"})["image_artifact"]


def test_failures_cancellation_and_timeouts_raise_clearly(api):
    with pytest.raises(JobFailed) as failed:
        api.run("diagnostic", parameters={"fail": True})
    assert "fail=true" in (failed.value.error or "") and failed.value.status["attempts"] == 1

    slow = api.submit("diagnostic", parameters={"duration_s": 30, "steps": 60})
    with pytest.raises(WaitTimeout):
        slow.wait(timeout=0.5)
    assert slow.cancel()["task_id"] == slow.id
    with pytest.raises(JobCancelled):
        slow.wait(timeout=60)


def test_api_errors_carry_the_servers_reasons(api, stack):
    with pytest.raises(ValidationError) as bad:
        api.submit("diagnostic", parameters={"steps": 0})
    assert bad.value.status == 400 and [f.field for f in bad.value.fields] == ["parameters.steps"]
    with pytest.raises(ValidationError) as unknown:
        api.submit("no_such_type")
    assert "Valid types" in unknown.value.message
    with pytest.raises(NotFound):
        api.job("00000000-0000-0000-0000-000000000000").status()
    with Client(stack.url, api_key="ait_wrong") as wrong, pytest.raises(Unauthorized):
        next(wrong.jobs())
    with Client(f"http://127.0.0.1:{free_port()}", api_key="x", retries=2, backoff_s=0.01) as nowhere, \
            pytest.raises(ConnectionFailed):
        nowhere.task_types()


def test_listing_follows_the_cursor_and_filters(api):
    ids = [api.submit("diagnostic").id for _ in range(5)]
    for task_id in ids:
        api.job(task_id).wait(timeout=60)
    listed = [t["task_id"] for t in api.jobs(page_size=2)]
    assert listed == list(reversed(ids))
    assert [t["task_id"] for t in api.jobs(status="SUCCESS", task_type="diagnostic", limit=3)] == listed[:3]
    assert list(api.jobs(status="FAILURE")) == []
    assert "diagnostic" in {t["name"] for t in api.task_types()}


def test_same_idempotency_key_same_job(api):
    first = api.submit("diagnostic", idempotency_key="order-42")
    again = api.submit("diagnostic", idempotency_key="order-42")
    assert first.id == again.id


def test_settings_from_the_environment(stack, monkeypatch):
    monkeypatch.setenv("AITASKS_URL", stack.url)
    monkeypatch.setenv("AITASKS_API_KEY", stack.new_key())
    with Client() as c:
        assert c.run("diagnostic", timeout=60)["attempts"] == 1


@pytest.mark.slow  # seconds of waiting
def test_async_client_does_the_same(stack, tmp_path):
    source = photo(tmp_path)

    async def main() -> None:
        async with AsyncClient(stack.url, api_key=stack.new_key()) as c:
            seen: list[int] = []
            job = await c.submit("diagnostic", parameters={"duration_s": 0.5, "steps": 4})
            result = await job.wait(timeout=60, on_progress=lambda s: seen.append(s["progress"]))
            assert result["parameters"]["steps"] == 4 and seen == sorted(seen)
            # Several jobs at once, from one event loop.
            jobs = [await c.submit("style_transfer", image=source, parameters={"style": s})
                    for s in ("pencil", "oil")]
            results = await asyncio.gather(*(j.wait(timeout=120) for j in jobs))
            assert [r["metadata"]["style"] for r in results] == ["pencil", "oil"]
            saved = await jobs[0].download("result.png", tmp_path / "pencil.png")
            with Image.open(saved) as img:
                assert img.size == (128, 128)
            with pytest.raises(JobFailed):
                await c.run("diagnostic", parameters={"fail": True}, timeout=60)
            slow = await c.submit("diagnostic", parameters={"duration_s": 30, "steps": 60})
            with pytest.raises(WaitTimeout):
                await slow.wait(timeout=0.5)
            await slow.cancel()
            with pytest.raises(JobCancelled):
                await slow.wait(timeout=60)
            assert [t["task_id"] async for t in c.jobs(limit=1)] == [slow.id]

    asyncio.run(main())


FERRY = ("The island ferry leaves the harbour at seven in the morning and at five in the evening. "
         "Bicycles travel free of charge, but cars must be booked two days ahead.")
GARDEN = ("Tomato seedlings should be planted outside only after the last frost, usually in late May. "
          "Water them at the roots in the morning, never on the leaves.")


@pytest.mark.slow  # the sentence-transformers model
def test_documents_upload_wait_search_list_and_delete(api, tmp_path):
    from aitasks.client import DocumentFailed

    path = tmp_path / "ferry.txt"
    path.write_text(FERRY)
    done = api.ingest(path, document_id="ferry", metadata={"topic": "travel"}, timeout=240)
    assert done["status"] == "completed" and done["chunks"] >= 1 and done["metadata"] == {"topic": "travel"}
    accepted = api.upload_document(GARDEN.encode(), document_id="garden")  # bytes: the type is read from the content
    assert accepted["status"] == "processing" and api.wait_document("garden", timeout=240)["status"] == "completed"
    hits = api.search("When can I take the boat in the evening?", top_k=2)
    assert hits[0]["document_id"] == "ferry" and hits[0]["page"] is None
    assert api.search("boat times", filters={"topic": "travel"})[0]["document_id"] == "ferry"
    assert {d["document_id"] for d in api.documents()} >= {"ferry", "garden"}
    assert [d["document_id"] for d in api.documents(page_size=1, limit=2)] == ["garden", "ferry"]
    assert api.delete_document("ferry")["deleted"] is True
    assert all(h["document_id"] != "ferry" for h in api.search("When can I take the boat in the evening?"))
    with pytest.raises(NotFound):
        api.document("ferry")
    # A document that fails in the worker raises DocumentFailed with the reason.
    blank = io.BytesIO()
    Image.new("L", (400, 300), 255).save(blank, "PNG")
    blank_path = tmp_path / "blank.png"
    blank_path.write_bytes(blank.getvalue())
    with pytest.raises(DocumentFailed) as failed:
        api.ingest(blank_path, document_id="blank", timeout=240)
    assert failed.value.status["status"] == "failed" and failed.value.error
    with pytest.raises(ValidationError) as refused:
        api.search("")
    assert refused.value.fields[0].field == "query"


@pytest.mark.slow  # the sentence-transformers model
def test_async_client_documents(stack, tmp_path):
    async def go() -> None:
        async with AsyncClient(stack.url, api_key=stack.new_key()) as c:
            done = await c.ingest(GARDEN.encode(), document_id="garden", timeout=240)
            assert done["status"] == "completed"
            hits = await c.search("How should I water young tomato plants?")
            assert hits[0]["document_id"] == "garden"
            assert [d["document_id"] async for d in c.documents()] == ["garden"]
            assert (await c.delete_document("garden"))["chunks_deleted"] == done["chunks"]
            assert await c.search("How should I water young tomato plants?") == []

    asyncio.run(go())


# --- without a deployment: the generated sync client, the SSE parser, wait()'s stream and fallbacks --------


def test_the_sync_client_is_generated_from_the_async_one():
    script = Path(__file__).resolve().parent.parent / "scripts" / "unasync.py"
    out = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"run scripts/unasync.py:\n{out.stdout}{out.stderr}"


def test_the_sse_parser_follows_the_event_stream_rules():
    lines = ["retry: 2000", "", ": keepalive", "id: 3", "data: {\"a\":", "data:1}", "", "event: note",
             "data", "", "event: lonely", "", "id: 4", "data: x: y", "", "event: end", "data: {}", "", "data: cut"]
    got = list(sse.messages(lines))
    assert got == [sse.Message('{"a":\n1}', "message", "3"), sse.Message("", "note", "3"),
                   sse.Message("x: y", "message", "4"), sse.Message("{}", "end", "4")]
    assert got[0].json() == {"a": 1}
    decoder = sse.Decoder()
    assert [decoder.feed(line) for line in ("retry: 2000", "")] == [None, None] and decoder.retry_ms == 2000
    assert list(sse.updates(['data: {"status": "PENDING"}', "", "event: end", "data: {}", "", 'data: {"b": 1}',
                             ""])) == [{"status": "PENDING"}]


def doc(seq: int, status: str, **extra: Any) -> dict[str, Any]:
    return {"task_id": "t1", "seq": seq, "status": status, "progress": 0, **extra}


def event_stream(*docs: dict[str, Any], end: bool = True) -> bytes:
    body = b"retry: 2000\n\n" + b"".join(b"id: %d\ndata: %s\n\n" % (d["seq"], json.dumps(d).encode()) for d in docs)
    return body + (b'event: end\ndata: {"task_id": "t1"}\n\n' if end else b"")


class Dropped(httpx.SyncByteStream):
    """An event stream that breaks after its first bytes, as when a proxy cuts it."""

    def __init__(self, first: bytes):
        self.first = first

    def __iter__(self) -> Iterator[bytes]:
        yield self.first
        raise httpx.RemoteProtocolError("peer closed connection")


SSE = {"content-type": "text/event-stream"}
DONE = doc(3, "SUCCESS", result={"answer": 42})


def fake(routes: dict[str, list[httpx.Response]], calls: list[str]) -> Client:
    """A Client whose service answers each path with the next of its canned responses."""

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1/tasks/t1/")
        calls.append(path)
        return routes[path].pop(0)

    return Client("http://aitasks.test", api_key="k", backoff_s=0.01, transport=httpx.MockTransport(handle))


def test_wait_follows_the_stream_reopens_it_and_reports_each_change_once():
    calls: list[str] = []
    routes = {"events": [httpx.Response(200, headers=SSE, stream=Dropped(event_stream(doc(1, "PENDING"),
                                                                                      doc(2, "PROCESSING"), end=False))),
                         httpx.Response(200, headers=SSE, content=event_stream(doc(2, "PROCESSING"), DONE))]}
    seen: list[dict[str, Any]] = []
    with fake(routes, calls) as c:
        job = c.job("t1")
        assert job.wait(timeout=30, on_progress=seen.append) == {"answer": 42}
    assert [d["seq"] for d in seen] == [1, 2, 3] and job.last == DONE
    assert calls == ["events", "events"]  # no polling: the stream said it all


def test_wait_polls_the_status_where_there_is_no_event_stream():
    calls: list[str] = []
    html = httpx.Response(502, headers={"content-type": "text/html"}, content=b"<h1>Bad gateway</h1>")
    status = [{"task_id": "t1", "status": s, "progress": p} for s, p in
              (("PROCESSING", 10), ("PROCESSING", 10), ("SUCCESS", 100))]
    routes = {"events": [html, html], "status/": [httpx.Response(200, json=s) for s in status],
              "result/": [httpx.Response(200, json=DONE)]}
    seen: list[str] = []
    with fake(routes, calls) as c:
        assert c.job("t1").wait(on_progress=lambda s: seen.append(s["status"])) == {"answer": 42}
        assert seen == ["PROCESSING", "SUCCESS"]
        assert calls == ["events", "status/", "status/", "status/", "result/"]
        with pytest.raises(ApiError) as no_stream:  # events() has nothing to fall back on
            list(c.job("t1").events())
        assert no_stream.value.status == 502
    gone = {"events": [httpx.Response(404, json={"error": "Task not found", "code": "not_found"})]}
    with fake(gone, []) as c, pytest.raises(NotFound):
        c.job("t1").wait()


def test_async_wait_ends_on_time_during_a_silent_stream():
    async def silent() -> AsyncIterator[bytes]:
        yield event_stream(doc(1, "PROCESSING"), end=False)
        await asyncio.sleep(30)

    async def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE, content=silent())

    async def main() -> float:
        async with AsyncClient("http://aitasks.test", transport=httpx.MockTransport(handle)) as c:
            started = time.monotonic()
            with pytest.raises(WaitTimeout, match="still PROCESSING after 0.3 s"):
                await c.job("t1").wait(timeout=0.3)
            return time.monotonic() - started

    assert asyncio.run(main()) < 2
