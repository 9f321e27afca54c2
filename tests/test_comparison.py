"""The ``comparison`` job type through the HTTP API: variants as child jobs on two worker processes,
the chord on the job store (counting, callback, cancel, redelivery), and the grid checked on its pixels."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from PIL import Image
from skimage import data as samples

from aitasks.jobs import keys
from aitasks.jobs.messages import job_message
from aitasks.jobs.models import Job
from aitasks.jobs.store import JobStore
from pictures import png, b64
from stack import Stack, poll, sse_events, wait_status

pytestmark = pytest.mark.slow  # its own two-worker stack; variants run mediapipe's models

TASKS = "/api/v1/tasks"


# --- a deployment with two worker processes on the cpu queue -------------------------------------


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("comparison"))
    try:
        s.start()
        s.start_worker("cpu", name="worker-cpu-2")
        poll(lambda: len([k for k in s.redis.keys(keys.WORKERS_PATTERN)]) >= 3, "three live workers", 90)
        yield s
    finally:
        s.stop()


@pytest.fixture
def api(two_workers: Stack) -> Iterator[httpx.Client]:
    with two_workers.client(timeout=60) as c:
        yield c


# --- pictures and helpers ------------------------------------------------------------------------


ASTRONAUT = png(np.asarray(samples.astronaut()))


def compare(client: httpx.Client, variants: list[dict[str, Any]], **parameters: Any) -> str:
    r = client.post(f"{TASKS}/submit/", json={"task_type": "comparison", "image": b64(ASTRONAUT),
                                              "parameters": {"variants": variants, **parameters}})
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


def result_of(client: httpx.Client, task_id: str) -> tuple[dict[str, Any], np.ndarray]:
    r = client.get(f"{TASKS}/{task_id}/result/")
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    grid = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["image_data"]))).convert("RGB"))
    return result, grid


def child_image(client: httpx.Client, child_id: str) -> Image.Image:
    r = client.get(f"{TASKS}/{child_id}/result/")
    assert r.status_code == 200, r.text
    return Image.open(io.BytesIO(base64.b64decode(r.json()["result"]["image_data"])))


def crop(grid: np.ndarray, box: list[int]) -> np.ndarray:
    x, y, w, h = box
    return grid[y:y + h, x:x + w].astype(np.int16)


def as_tile(image: Image.Image, width: int, height: int, square: int) -> np.ndarray:
    """What a tile should show: the image scaled to the picture box, over a checkerboard of two greys."""
    y, x = np.mgrid[0:height, 0:width]
    board = np.where((((x // square) + (y // square)) % 2)[..., None] == 1, [204, 204, 204], [236, 236, 236])
    out = Image.fromarray(board.astype(np.uint8))
    scaled = image.convert("RGBA").resize((width, height), Image.Resampling.LANCZOS)
    out.paste(scaled, (0, 0), scaled)
    return np.asarray(out).astype(np.int16)


def tile_diff(tile: np.ndarray, image: Image.Image, square: int) -> float:
    return float(np.abs(tile - as_tile(image, tile.shape[1], tile.shape[0], square)).mean())


def statuses(client: httpx.Client, ids: list[str]) -> list[dict[str, Any]]:
    out = []
    for child_id in ids:
        r = client.get(f"{TASKS}/{child_id}/status/")
        assert r.status_code == 200, r.text
        out.append(r.json())
    return out


# --- the grid, the children, the workers ---------------------------------------------------------


VARIANTS = [
    {"task_type": "style_transfer", "parameters": {"style": "pencil"}},
    {"task_type": "style_transfer", "parameters": {"style": "oil"}},
    {"task_type": "style_transfer", "parameters": {"style": "cartoon"}},
    {"task_type": "background_removal", "parameters": {"mode": "object", "output": "rgba"}},
]


def test_variants_run_as_child_jobs_on_both_workers_into_one_labelled_grid(two_workers, api):
    task_id = compare(api, VARIANTS)
    events = [e for e in sse_events(api, task_id, timeout_s=180)]
    final = wait_status(api, task_id, timeout_s=180)
    assert final["status"] == "SUCCESS", final

    # Children: real jobs, one per variant, each naming its parent, visible through the status API.
    children = final["children"]
    assert children == [f"{task_id}.{i}" for i in range(1, 5)]
    kids = statuses(api, children)
    assert [k["task_type"] for k in kids] == ["style_transfer"] * 3 + ["background_removal"]
    assert all(k["parent"] == task_id and k["status"] == "SUCCESS" and k["queue"] == "cpu" for k in kids), kids
    # ...and the two worker processes serving the cpu queue shared them.
    assert len({k["worker"] for k in kids}) == 2, [k["worker"] for k in kids]
    listed = api.get(f"{TASKS}/", params={"limit": 10}).json()["tasks"]
    assert {t["task_id"] for t in listed} == {task_id, *children}

    # Progress counted the children as they finished, pushed on the parent's stream, in order.
    counted = [(e["progress"], e["message"]) for e in events if "child jobs finished" in e.get("message", "")]
    assert counted == [(25, "1 of 4 child jobs finished"), (50, "2 of 4 child jobs finished"),
                       (75, "3 of 4 child jobs finished"), (99, "4 of 4 child jobs finished")], events
    assert events[-1]["status"] == "SUCCESS" and events[-1]["progress"] == 100

    # The grid: the original and one tile per variant, labelled with the type and its parameters.
    result, grid = result_of(api, task_id)
    assert result["variants"] == {"total": 4, "succeeded": 4, "failed": 0, "cancelled": 0}
    tiles = result["tiles"]
    assert [t["kind"] for t in tiles] == ["original"] + ["variant"] * 4
    assert [t["label"] for t in tiles] == ["original", "style_transfer\nstyle=pencil", "style_transfer\nstyle=oil",
                                           "style_transfer\nstyle=cartoon",
                                           "background_removal\nmode=object, output=rgba"]
    assert [t.get("task_id") for t in tiles[1:]] == children
    layout = result["grid"]
    assert grid.shape == (layout["height"], layout["width"], 3)
    assert (layout["columns"], layout["rows"]) == (3, 2)
    for t in tiles:  # 512 x 512 pictures fill their 256 px cell
        assert t["picture"] == t["cell"], t

    # Each tile shows its own child's picture, and not another's: the tiles differ as the variants do.
    pictures = [crop(grid, t["picture"]) for t in tiles]
    images = [Image.open(io.BytesIO(ASTRONAUT))] + [child_image(api, c) for c in children]
    diffs = np.array([[tile_diff(tile, img, 256 // 24) for img in images] for tile in pictures])
    for i in range(len(tiles)):
        assert diffs[i, i] < 1.0, diffs.round(1)
        assert all(diffs[i, j] > 10 for j in range(len(tiles)) if j != i), diffs.round(1)
    # The background removal's transparent corner shows the checkerboard (two greys), not the photo.
    corner = pictures[4][:24, :24]
    assert sorted(np.unique(corner.reshape(-1, 3), axis=0).tolist()) == [[204, 204, 204], [236, 236, 236]]


def test_a_failing_variant_is_a_failed_tile_and_the_comparison_succeeds(two_workers, api):
    task_id = compare(api, [{"task_type": "style_transfer", "parameters": {"style": "detail"}},
                            {"task_type": "diagnostic", "parameters": {"fail": True}, "label": "broken"}],
                      include_original=False, tile_px=128)
    final = wait_status(api, task_id, timeout_s=120)
    assert final["status"] == "SUCCESS", final
    result, grid = result_of(api, task_id)
    assert result["variants"] == {"total": 2, "succeeded": 1, "failed": 1, "cancelled": 0}
    ok, failed = result["tiles"]
    assert ok["status"] == "SUCCESS" and ok["label"] == "style_transfer\nstyle=detail"
    assert failed["status"] == "FAILURE" and failed["label"] == "broken"
    assert failed["error_type"] == "JobError" and "parameters.fail=true" in failed["error"]
    child = api.get(f"{TASKS}/{failed['task_id']}/status/").json()
    assert child["status"] == "FAILURE" and child["error"] == failed["error"]
    # The failed tile is a red panel with white writing (FAILED and the error), the other a picture.
    panel = crop(grid, failed["cell"])
    red = np.all(np.abs(panel - np.array([150, 28, 28])) < 4, axis=-1)
    white = np.all(panel > 235, axis=-1)
    assert red.mean() > 0.7 and 0.005 < white.mean() < 0.3, (red.mean(), white.mean())
    assert not np.all(np.abs(crop(grid, ok["cell"]) - np.array([150, 28, 28])) < 4, axis=-1).mean() > 0.1
    # Usage (cost reports): the comparison counts as a job but not its waiting time; its children count.
    r: redis.Redis = two_workers.redis
    record = r.hgetall(keys.job(task_id))
    day = time.strftime("%Y-%m-%d", time.gmtime(float(record[b"finished_at"])))
    usage = {k.decode(): float(v) for k, v in r.hgetall(keys.usage(record[b"tenant"].decode(), day)).items()}
    parent = [k for k in usage if k.startswith("comparison|")]
    assert parent and all(usage[k] == 0 for k in parent if k.endswith("|seconds")), usage
    assert sum(v for k, v in usage.items() if k.startswith("style_transfer|") and k.endswith("|seconds")) > 0


# --- cancelling ----------------------------------------------------------------------------------


LONG = {"task_type": "diagnostic", "parameters": {"duration_s": 60, "steps": 240}}


STUCK = {"task_type": "diagnostic", "parameters": {"duration_s": 60, "ignore_cancel": True}}


def test_cancelling_the_comparison_cancels_its_running_and_queued_children(api):
    """The two running children ignore the cancel: the workers' monitors terminate them (a terminal write
    from neither the job nor the API); the queued one is cancelled by the API. All three count."""
    task_id = compare(api, [STUCK, STUCK, STUCK])
    children = poll(lambda: api.get(f"{TASKS}/{task_id}/status/").json().get("children"), "children", 60)
    poll(lambda: sum(k["status"] == "PROCESSING" for k in statuses(api, children)) == 2, "two running children", 60)
    started = time.monotonic()
    r = api.post(f"/api/tasks/{task_id}/cancel")  # the seed's path: the same handler
    assert r.status_code == 200 and r.json()["status"] == "PROCESSING", r.text
    final = wait_status(api, task_id, timeout_s=30)
    assert final["status"] == "REVOKED", final
    assert time.monotonic() - started < 15
    kids = statuses(api, children)
    assert [k["status"] for k in kids] == ["REVOKED"] * 3, kids
    assert sorted(k["message"] for k in kids) == ["Cancelled before it started"] + [
        "Cancelled; the job did not stop in time and was terminated"] * 2, kids
    assert final["message"] == "Cancelled" and final["progress"] == 99


def test_a_child_cancelled_alone_counts_as_cancelled_and_the_parent_goes_on(api):
    task_id = compare(api, [LONG, {"task_type": "style_transfer", "parameters": {"style": "detail"}}],
                      include_original=False, tile_px=96)
    children = poll(lambda: api.get(f"{TASKS}/{task_id}/status/").json().get("children"), "children", 60)
    wait_status(api, children[0], {"PROCESSING"})
    assert api.post(f"{TASKS}/{children[0]}/cancel/").status_code == 200
    final = wait_status(api, task_id, timeout_s=60)
    assert final["status"] == "SUCCESS", final
    result, _ = result_of(api, task_id)
    assert [t["status"] for t in result["tiles"]] == ["REVOKED", "SUCCESS"]
    assert result["variants"] == {"total": 2, "succeeded": 1, "failed": 0, "cancelled": 1}


# --- at-least-once delivery of the parent -------------------------------------------------------


def test_a_redelivered_parent_creates_no_duplicate_children(two_workers, api):
    r: redis.Redis = two_workers.redis
    # Children long enough that the redelivery below is taken while they run (under load, 2 s children
    # could both end first, queueing the callback ahead of it: seen once in CI).
    short = {"task_type": "diagnostic", "parameters": {"duration_s": 5, "steps": 5}}
    task_id = compare(api, [short, short], include_original=False, tile_px=64)
    children = poll(lambda: api.get(f"{TASKS}/{task_id}/status/").json().get("children"), "children", 60)
    assert r.hget(keys.job(task_id), "children_done") == b"0"  # the premise: no child has ended yet
    record = Job.from_hash(r.hgetall(keys.job(task_id)))
    redelivery = job_message(task_id, "cpu", record.soft_time_limit_s, record.time_limit_s)
    # The first run's message delivered again while the children run (as kombu restores an unacked one)...
    r.lpush("cpu", redelivery)
    # ...and the fan-out itself repeated: the script finds the children and creates nothing.
    store = JobStore(r)
    fresh = store.get(task_id)
    assert fresh is not None
    extra = Job(id=f"{task_id}.9", type="diagnostic", tenant=record.tenant, queue="cpu", parent=task_id)
    assert store.fan_out(fresh, [(extra, job_message(extra.id, "cpu", 10, 20))], "x", 60, "again") == 0
    final = wait_status(api, task_id, timeout_s=60)
    assert final["status"] == "SUCCESS", final
    r.lpush("cpu", redelivery)  # after the end: dropped
    time.sleep(1.5)
    assert api.get(f"{TASKS}/{task_id}/status/").json() == final | {"progress": 100}
    assert r.hget(keys.job(task_id), "children_done") == b"2"
    assert r.hget(keys.job(task_id), "children_total") == b"2"
    assert int(r.hget(keys.job(task_id), "deliveries") or 0) >= 3  # first run, redelivery, callback
    tenant_jobs = {m.decode() for m in r.zrange(keys.tenant_index(record.tenant), 0, -1)}
    assert tenant_jobs == {task_id, *children}
    assert not r.exists(keys.job(f"{task_id}.3")) and not r.exists(keys.job(extra.id))
    kids = statuses(api, children)
    assert all(k["status"] == "SUCCESS" and k["attempts"] == 1 for k in kids), kids
    result, _ = result_of(api, task_id)
    assert [t["status"] for t in result["tiles"]] == ["SUCCESS", "SUCCESS"]


def test_the_worker_dying_while_it_composes_the_grid_is_safe(two_workers, api):
    """SIGKILL the pool process composing the grid (the callback run): its message comes back
    (acks_late, reject_on_worker_lost), the grid is composed again, and nothing is duplicated."""
    r: redis.Redis = two_workers.redis
    styles = ["detail", "pencil"] * 4
    task_id = compare(api, [{"task_type": "style_transfer", "parameters": {"style": s}} for s in styles],
                      tile_px=1024)  # a 3120 x 3723 grid: long enough to be caught composing
    poll(lambda: r.hget(keys.job(task_id), "message") == b"composing the grid", "the grid being composed",
         120, interval_s=0.005)
    node = r.hget(keys.job(task_id), "worker").decode()
    worker = next(w for w in two_workers.workers.values() if f".{w.pid}@" in node)
    for pid in worker.children():
        os.kill(pid, signal.SIGKILL)
    final = wait_status(api, task_id, timeout_s=120)
    assert final["status"] == "SUCCESS", final
    record = r.hgetall(keys.job(task_id))
    assert int(record[b"deliveries"]) == 3 and int(record[b"finished_deliveries"]) == 2  # one run was lost
    assert record[b"children_done"] == b"8" and len(final["children"]) == 8
    tenant = record[b"tenant"].decode()
    assert {m.decode() for m in r.zrange(keys.tenant_index(tenant), 0, -1)} == {task_id, *final["children"]}
    result, grid = result_of(api, task_id)
    assert result["variants"]["succeeded"] == 8 and grid.shape[:2] == (3723, 3120)


# --- validation at submit ------------------------------------------------------------------------


@pytest.mark.parametrize("variants, field", [
    ([{"task_type": "style_transfer", "parameters": {"style": "oil"}},
      {"task_type": "style_transfer", "parameters": {"style": "neon"}}], "parameters.variants[1].parameters.style"),
    ([{"task_type": "style_transfer", "parameters": {"style": "oil"}},
      {"task_type": "style_transfer", "parameters": {}}], "parameters.variants[1].parameters.style"),
    ([{"task_type": "nope"}, {"task_type": "style_transfer", "parameters": {"style": "oil"}}],
     "parameters.variants[0].task_type"),
    ([{"task_type": "comparison"}, {"task_type": "diagnostic"}], "parameters.variants[0].task_type"),
    ([{"task_type": "face_swap"}, {"task_type": "diagnostic"}], "parameters.variants[0].task_type"),
    ([{"task_type": "diagnostic"}], "parameters.variants"),
    ([{"task_type": "diagnostic"}] * 9, "parameters.variants"),
    ([{"task_type": "background_removal", "parameters": {"output": "jpeg"}}, {"task_type": "diagnostic"}],
     "parameters.variants[0].parameters.output"),
    ([{"task_type": "object_removal", "parameters": {"boxes": [[500, 500, 100, 100]]}},
      {"task_type": "diagnostic"}], "parameters.variants[0].parameters.boxes"),
    ([{"task_type": "diagnostic", "parameters": {"duration_s": 1}, "colour": "red"},
      {"task_type": "diagnostic"}], "parameters.variants[0].colour"),
])
def test_variants_are_checked_at_submit_against_their_own_type(api, variants, field):
    r = api.post(f"{TASKS}/submit/", json={"task_type": "comparison", "image": b64(ASTRONAUT),
                                           "parameters": {"variants": variants}})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == "validation_error"
    named = [f["field"] for f in body["fields"]]
    assert any(n == field or n.startswith(field + "[") or n.startswith(field + ".") for n in named), body
    assert body["error"].startswith(named[0])
    assert api.get(f"{TASKS}/").json()["tasks"] == []  # nothing accepted


def test_the_catalog_describes_comparison(api):
    types = {t["name"]: t for t in api.get("/api/v1/task-types").json()}
    schema = types["comparison"]["input_schema"]
    assert set(schema["properties"]) == {"image", "parameters"}
    assert types["comparison"]["file_inputs"] == ["image"]
    assert "variants" in json.dumps(schema)
