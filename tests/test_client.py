"""The Python client (``aitasks.Client``, ``aitasks.AsyncClient``) against a real deployment."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from skimage import data as samples

from aitasks import AsyncClient, Client
from aitasks.client import (
    ConnectionFailed,
    JobCancelled,
    JobFailed,
    NotFound,
    Unauthorized,
    ValidationError,
    WaitTimeout,
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
