"""The Replicate-compatible API (/v1/), driven by the official ``replicate`` client from PyPI.

Every job type of the catalog runs as the model ``aitasks/<type>`` against the test deployment; the
pictures are checked on their pixels as in test_image_jobs.py.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import replicate
from PIL import Image
from replicate.exceptions import ModelError, ReplicateError
from replicate.helpers import FileOutput

from stack import Stack, poll
from test_webhooks import Receiver
from test_image_jobs import astronaut, bright_fraction, coffee, lfw_face, png, scene_with_square


_open: list[replicate.Client] = []


def client_for(stack: Stack, key: str | None = None) -> replicate.Client:
    # The client's paths already start with /v1/: its base URL is the service's root, as Replicate's is.
    client = replicate.Client(api_token=key or stack.new_key(), base_url=stack.url)
    _open.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """The client never closes its connection pool: close it, or pytest sees unclosed sockets."""
    yield
    while _open:
        _open.pop()._client.close()


@pytest.fixture
def rc(stack: Stack) -> replicate.Client:
    """A replicate client of a fresh tenant."""
    return client_for(stack)


def read_output(rc: replicate.Client, output: Any) -> bytes:
    """The output file's bytes, as user code reads them: the client hands back a FileOutput. (It wraps
    only https: and data: outputs; over plain http, as here, the service sends a data: URI.)"""
    assert isinstance(output, FileOutput), output
    return output.read()


def image_of(rc: replicate.Client, output: Any) -> np.ndarray:
    image = Image.open(io.BytesIO(read_output(rc, output)))
    assert image.format == "PNG"
    return np.asarray(image)


def upload(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


# --- models --------------------------------------------------------------------------------------


def test_every_job_type_is_a_model_with_its_schema(rc, stack):
    names = {t["name"] for t in httpx.get(f"{stack.url}/api/v1/task-types", timeout=30).json()}
    listed = {m.id for m in rc.models.list()}
    assert listed == {f"aitasks/{n}" for n in names}

    model = rc.models.get("aitasks/background_removal")
    assert (model.owner, model.name, model.visibility) == ("aitasks", "background_removal", "public")
    version = model.latest_version
    assert version is not None
    schemas = version.openapi_schema["components"]["schemas"]
    props = schemas["Input"]["properties"]
    assert props["image"]["format"] == "uri" and schemas["Input"]["required"] == ["image"]
    assert props["output"]["enum"] == ["rgba", "mask", "color"]  # a parameter, side by side with the file
    assert "parameters" not in props
    assert schemas["Output"] == {"type": "string", "format": "uri", "title": "Output"}
    assert rc.models.get("aitasks/diagnostic").latest_version.openapi_schema[  # type: ignore[union-attr]
        "components"]["schemas"]["Output"]["type"] == "object"

    assert model.versions.get(version.id).id == version.id
    assert [v.id for v in model.versions.list()] == [version.id]
    with pytest.raises(ReplicateError) as err:
        model.versions.get("0" * 64)
    assert err.value.status == 404


def test_unknown_model_and_wrong_token(rc, stack):
    for ref in ("aitasks/no_such_type", "someone/background_removal"):
        with pytest.raises(ReplicateError) as err:
            rc.models.get(ref)
        assert err.value.status == 404 and "not found" in (err.value.detail or ""), err.value
        with pytest.raises(ReplicateError) as err:
            rc.run(ref, input={})
        assert err.value.status == 404

    bad = client_for(stack, "not-a-key")
    with pytest.raises(ReplicateError) as err:
        bad.run("aitasks/diagnostic", input={})
    assert err.value.status == 401 and err.value.title == "Unauthenticated", err.value
    with pytest.raises(ReplicateError) as err:
        bad.predictions.list()
    assert err.value.status == 401


# --- running each job type -----------------------------------------------------------------------


@pytest.mark.slow  # mediapipe's models
def test_background_removal_by_upload_gives_a_transparent_backdrop(rc, stack):
    out = rc.run("aitasks/background_removal", input={"image": upload(png(astronaut()))})
    assert isinstance(out, FileOutput) and out.url.startswith("data:image/png;base64,")
    rgba = image_of(rc, out)
    assert rgba.shape == (512, 512, 4)
    for corner in (rgba[:40, :40, 3], rgba[:40, -40:, 3]):
        assert corner.max() <= 10, corner.max()
    assert rgba[150:210, 200:260, 3].mean() > 240  # the face stays
    # A listing keeps the artifact's URL (nothing inlined); it needs the key, like every artifact.
    listed = rc.predictions.list().results[0]
    assert isinstance(listed.output, str) and listed.output.startswith(f"{stack.url}/api/v1/tasks/{listed.id}/")
    assert httpx.get(listed.output, timeout=30).status_code == 401
    assert FileOutput(listed.output, rc).read() == out.read()


def test_style_transfer_by_data_uri_changes_the_picture(rc):
    photo = np.asarray(Image.fromarray(astronaut()).resize((256, 256)))
    out = rc.run("aitasks/style_transfer", input={"image": upload(png(photo)), "style": "watercolor"},
                 file_encoding_strategy="base64")
    styled = image_of(rc, out)
    assert styled.shape == photo.shape
    assert np.abs(styled.astype(int) - photo.astype(int)).mean() > 5


def test_object_removal_with_a_mask_file_removes_the_square(rc):
    scene = scene_with_square()
    mask = np.zeros(scene.shape[:2], np.uint8)
    mask[58:102, 118:162] = 255
    out = rc.run("aitasks/object_removal", input={"image": upload(png(scene)), "mask": upload(png(mask))})
    cleaned = image_of(rc, out)
    assert bright_fraction(scene) == 1.0 and bright_fraction(cleaned) < 0.02
    assert np.array_equal(cleaned[:30, :30], scene[:30, :30])


@pytest.mark.slow  # mediapipe's models
def test_face_swap_changes_the_face(rc):
    target = astronaut()
    out = rc.run("aitasks/face_swap", input={"source_image": upload(png(lfw_face(0))),
                                             "target_image": upload(png(target))})
    swapped = image_of(rc, out)
    assert swapped.shape == target.shape
    diff = np.abs(swapped.astype(int) - target.astype(int)).mean(axis=2)
    assert diff[140:220, 190:270].mean() > 10  # the astronaut's face
    assert diff[:60, :60].max() == 0


def test_diagnostic_output_is_its_result_object(rc):
    out = rc.run("aitasks/diagnostic", input={"steps": 2, "duration_s": 0.1})
    assert isinstance(out, dict)
    assert out["parameters"]["steps"] == 2 and out["attempts"] == 1 and out["artifacts"] == []


@pytest.mark.slow  # seconds of waiting
def test_run_outlasting_its_wait_polls_to_the_end(rc):
    out = rc.run("aitasks/diagnostic", input={"duration_s": 2.5, "steps": 2}, wait=1)
    assert isinstance(out, dict) and out["parameters"]["duration_s"] == 2.5


def test_image_generation_without_a_model_says_so(rc):
    with pytest.raises(ReplicateError) as err:
        rc.run("aitasks/image_generation", input={"prompt": "a red bicycle"})
    assert err.value.status == 503 and "not available" in (err.value.detail or ""), err.value


def test_failure_raises_model_error_with_the_message(rc):
    with pytest.raises(ModelError) as err:
        rc.run("aitasks/diagnostic", input={"fail": True})
    assert "diagnostic failure requested" in str(err.value)
    prediction = err.value.prediction
    assert prediction.status == "failed" and "diagnostic failure requested" in (prediction.logs or "")


def test_invalid_input_is_422_with_the_fields(rc):
    with pytest.raises(ReplicateError) as err:
        rc.run("aitasks/background_removal", input={"image": upload(png(coffee())), "output": "x"})
    assert err.value.status == 422 and err.value.title == "Input validation failed", err.value
    assert "output" in (err.value.detail or "")
    r = rc._client.post("/v1/models/aitasks/face_swap/predictions", json={"input": {}})
    body = r.json()
    assert r.status_code == 422 and {f["field"] for f in body["invalid_fields"]} >= {"source_image", "target_image"}
    # A URL that is not one of our uploads is refused, never fetched.
    with pytest.raises(ReplicateError) as err:
        rc.run("aitasks/background_removal", input={"image": "https://example.com/photo.png"})
    assert err.value.status == 422 and "image" in (err.value.detail or "")
    # Webhooks go through the service's own checks.
    with pytest.raises(ReplicateError) as err:
        rc.predictions.create(model="aitasks/diagnostic", input={}, webhook="http://169.254.169.254/hook")
    assert err.value.status == 422 and "webhook" in (err.value.detail or "")


# --- predictions ---------------------------------------------------------------------------------


@pytest.mark.slow  # seconds of waiting
def test_create_reload_wait_get_and_cancel(rc, stack):
    p = rc.predictions.create(model="aitasks/diagnostic", input={"duration_s": 1, "steps": 4})
    assert p.status in ("starting", "processing") and p.model == "aitasks/diagnostic"
    assert p.urls and p.urls["get"] == f"{stack.url}/v1/predictions/{p.id}"
    assert p.input and p.input["duration_s"] == 1 and p.input["steps"] == 4
    p.reload()
    p.wait()
    assert p.status == "succeeded" and p.output["parameters"]["duration_s"] == 1
    assert p.completed_at and p.started_at and p.metrics and p.metrics["predict_time"] >= 1
    assert "step 4/4" in (p.logs or "")
    again = rc.predictions.get(p.id)
    assert again.status == "succeeded" and again.output == p.output

    slow = rc.predictions.create(model="aitasks/diagnostic", input={"duration_s": 30, "steps": 60})
    slow.cancel()
    slow.wait()
    assert slow.status == "canceled" and slow.output is None and slow.error is None
    slow.cancel()  # already over: answered as it is
    assert slow.status == "canceled"


@pytest.mark.slow  # seconds of waiting
def test_prefer_wait_holds_the_create(rc):
    # replicate 1.0.7's predictions.create(model=...) drops `wait`; models.predictions.create and
    # predictions.create(version=...) send it as `Prefer: wait=N`.
    started = time.monotonic()
    p = rc.models.predictions.create(model="aitasks/diagnostic", input={"duration_s": 0.5}, wait=20)
    assert p.status == "succeeded" and time.monotonic() - started >= 0.5
    p = rc.predictions.create(version="aitasks/diagnostic", input={"duration_s": 0.2}, wait=True)
    assert p.status == "succeeded"
    started = time.monotonic()
    p = rc.models.predictions.create(model="aitasks/diagnostic", input={"duration_s": 10, "steps": 20}, wait=1)
    assert p.status in ("starting", "processing") and time.monotonic() - started < 5
    p.cancel()


def test_create_by_version_and_list_with_cursors(rc, stack):
    version = rc.models.get("aitasks/diagnostic").latest_version
    assert version is not None
    ids = [rc.predictions.create(version=version.id, input={"steps": 1}).id for _ in range(3)]
    ids.append(rc.predictions.create(version="aitasks/diagnostic", input={}).id)
    page = rc.predictions.list()
    assert [p.id for p in page.results] == ids[::-1] and page.next is None
    # Pages of two: follow `next` with the client.
    first = rc._client.get("/v1/predictions", params={"limit": 2}).json()
    assert [p["id"] for p in first["results"]] == ids[:1:-1] and first["next"]
    second = rc.predictions.list(first["next"])
    assert [p.id for p in second.results] == ids[1::-1]
    with pytest.raises(ReplicateError) as err:
        rc.predictions.create(version="f" * 64, input={})
    assert err.value.status == 404


def test_another_tenants_prediction_is_not_found(rc, stack):
    p = rc.predictions.create(model="aitasks/diagnostic", input={})
    other = client_for(stack)
    for call in (lambda: other.predictions.get(p.id), lambda: other.predictions.cancel(p.id)):
        with pytest.raises(ReplicateError) as err:
            call()
        assert err.value.status == 404
    assert all(q.id != p.id for q in other.predictions.list())


def test_webhooks_send_the_prediction_as_replicate_does(rc, stack):
    """A prediction's webhook gets Replicate's prediction object (as Replicate POSTs it), not aitasks'
    status document: each event at its own status, the completed one with the output the API shows."""
    receiver = Receiver()
    try:
        p = rc.predictions.create(model="aitasks/diagnostic", input={"steps": 2, "duration_s": 0.2},
                                  webhook=receiver.url, webhook_events_filter=["start", "completed"])
        p.wait()
        poll(lambda: len(receiver.received) >= 2, "two deliveries", timeout_s=30)
        # Several workers deliver in parallel: order by the seq in webhook-id, as receivers do.
        received = sorted(receiver.received, key=lambda r: int(r[0]["webhook-id"].split(":")[1]))
        events = [r[0]["webhook-id"].split(":")[2] for r in received]
        start, done = (json.loads(body) for _, body in received)
        assert events == ["start", "completed"]
        assert start["id"] == done["id"] == p.id
        assert (start["status"], start["output"]) == ("processing", None)
        assert done["status"] == "succeeded" and done["model"] == "aitasks/diagnostic"
        assert done["output"]["parameters"]["steps"] == 2
        assert done["urls"]["get"] == f"{stack.url}/v1/predictions/{p.id}"
        shown = rc.predictions.get(p.id)
        assert (done["output"], done["version"], done["input"]) == (shown.output, shown.version, shown.input)
        assert "task_id" not in done and "event" not in done
    finally:
        receiver.close()


def test_the_seeds_webhooks_keep_the_status_document(client, stack):
    """Submitted through the seeds' path, the same job's webhook is aitasks' status document."""
    receiver = Receiver()
    try:
        r = client.post("/api/v1/tasks/submit/", json={"task_type": "diagnostic", "webhook": receiver.url})
        assert r.status_code == 202, r.text
        doc = poll(lambda: receiver.docs(), "the delivery", timeout_s=30)[0]
        assert (doc["task_id"], doc["status"], doc["event"]) == (r.json()["task_id"], "SUCCESS", "completed")
    finally:
        receiver.close()


# --- files ---------------------------------------------------------------------------------------


def test_files_upload_get_download_and_stay_with_their_tenant(rc, stack):
    data = png(coffee())
    f = rc.files.create(io.BytesIO(data), filename="coffee.png")
    assert f.size == len(data) and f.content_type == "image/png" and f.name == "coffee.png"
    assert rc.files.get(f.id).checksums["sha256"] == f.checksums["sha256"]
    assert rc._client.get(f"/v1/files/{f.id}/download").content == data
    assert f.id in {x.id for x in rc.files.list()}

    out = rc.run("aitasks/diagnostic", input={"image": f.urls["get"]})
    assert out["image"]["width"] == 300 and out["image"]["bytes"] == len(data)

    other = client_for(stack)
    with pytest.raises(ReplicateError) as err:
        other.files.get(f.id)
    assert err.value.status == 404
    with pytest.raises(ReplicateError) as err:
        other.run("aitasks/diagnostic", input={"image": f.urls["get"]})
    assert err.value.status == 422

    rc.files.delete(f.id)
    with pytest.raises(ReplicateError):
        rc.files.get(f.id)


def test_the_environment_switch(stack, monkeypatch):
    monkeypatch.setenv("REPLICATE_BASE_URL", stack.url)
    monkeypatch.setenv("REPLICATE_API_TOKEN", stack.new_key())
    client = replicate.Client()
    _open.append(client)
    out = client.run("aitasks/diagnostic", input={"steps": 1})
    assert out["parameters"]["steps"] == 1
