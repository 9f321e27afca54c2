"""The report job types (visualization, export, cost_infographic) through the HTTP API with real
workers, checked on their content: the preview's pixels, the PDF's pages, text and images, and the
infographic's numbers against the usage the test itself created."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from pypdf import PdfReader

from aitasks.jobs import keys
from pictures import png, b64, astronaut, coffee
from stack import Stack, queue_held, submit, wait_status

TASKS = "/api/v1/tasks"


def finish(client: httpx.Client, task_type: str, expect: str = "SUCCESS", **body: Any) -> dict[str, Any]:
    """Submit, wait for the end, and return the /result/ body (or the status, for a failure)."""
    task_id = submit(client, task_type, **body)
    status = wait_status(client, task_id, timeout_s=170)
    assert status["status"] == expect, status
    if expect != "SUCCESS":
        return status
    r = client.get(f"{TASKS}/{task_id}/result/")
    assert r.status_code == 200, r.text
    return {"task_id": task_id, "status": status, **r.json()["result"]}


def artifact(client: httpx.Client, result: dict[str, Any], name: str) -> bytes:
    entry = next(a for a in result["artifacts"] if a["name"] == name)
    r = client.get(entry["url"])
    assert r.status_code == 200, r.text
    assert len(r.content) == entry["bytes"]
    return r.content


def refused(client: httpx.Client, field: str, **body: Any) -> dict[str, Any]:
    r = client.post(f"{TASKS}/submit/", json=body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["code"] == "validation_error", err
    assert field in {f["field"] for f in err["fields"]}, err
    return err  # type: ignore[no-any-return]


def region(img: np.ndarray, box: list[int]) -> np.ndarray:
    x, y, w, h = box
    return img[y:y + h, x:x + w]


# --- visualization ---------------------------------------------------------------------------------


@pytest.mark.slow  # mediapipe's models
def test_visualization_background_removal_preview_has_original_left_and_cutout_right(client):
    photo = astronaut()
    result = finish(client, "visualization", image=b64(png(photo)),
                    parameters={"operation": "background_removal", "operation_parameters": {"output": "rgba"}})
    assert result["operation"] == "background_removal"
    assert result["image_artifact"] == "result.png" and result["preview_artifact"] == "preview.png"
    assert {a["name"] for a in result["artifacts"]} == {"result.png", "preview.png"}

    # The processed image (inlined as image_data, as the image jobs do) is really processed: a cut-out.
    processed = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["image_data"]))))
    assert processed.shape == (512, 512, 4)
    alpha = processed[..., 3]
    assert alpha[:40, :40].max() <= 10 and alpha[:40, -40:].max() <= 10  # backdrop gone
    assert alpha[150:210, 200:260].mean() > 240  # the face kept
    assert result["metadata"]["method"] == "mediapipe selfie segmentation"

    preview = np.asarray(Image.open(io.BytesIO(artifact(client, result, "preview.png"))).convert("RGB"))
    layout = result["metadata"]["preview"]
    assert preview.shape == (layout["height"], layout["width"], 3)
    before, after = layout["before_box"], layout["after_box"]
    assert before[2:] == after[2:] == [512, 512]  # same size, no scaling at this size
    assert before[0] + before[2] < after[0]  # original on the left, processed on the right
    # Left panel: the original, pixel for pixel.
    assert np.array_equal(region(preview, before), photo)
    # Right panel: the processed image where it is opaque, a grey/white checkerboard where it is clear.
    right = region(preview, after).astype(int)
    opaque, clear = alpha == 255, alpha == 0
    assert opaque.mean() > 0.2 and clear.mean() > 0.2
    assert np.abs(right[opaque] - processed[..., :3][opaque].astype(int)).max() <= 1
    checks = right[clear]
    assert set(np.unique(checks)) <= {204, 255} and len(np.unique(checks)) == 2
    assert not np.array_equal(region(preview, after), photo)
    # Each panel has its label above it: dark text pixels in the band over it, none beside.
    for x, y, w, _ in (before, after):
        band = preview[max(0, y - 45):y - 4, x:x + w]
        assert (band.min(axis=2) < 80).sum() > 100, "no label text above the panel"


def test_visualization_style_transfer_routes_and_shows_the_styled_picture(client, stack: Stack):
    picture = coffee()
    result = finish(client, "visualization", image=b64(png(picture)),
                    parameters={"operation": "style_transfer", "operation_parameters": {"style": "pencil"},
                                "after_label": "Pencil sketch"})
    assert result["status"]["queue"] == "cpu"
    processed = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["image_data"]))).convert("RGB"))
    assert processed.shape == picture.shape
    assert np.abs(processed.astype(int) - picture.astype(int)).mean() > 20  # really restyled
    preview = np.asarray(Image.open(io.BytesIO(artifact(client, result, "preview.png"))).convert("RGB"))
    layout = result["metadata"]["preview"]
    assert np.array_equal(region(preview, layout["before_box"]), picture)
    assert np.array_equal(region(preview, layout["after_box"]), processed)
    assert result["metadata"]["style"] == "pencil"


def test_visualization_refuses_bad_operations_and_parameters_naming_the_field(client):
    image = b64(png(coffee()))
    err = refused(client, "parameters.operation", task_type="visualization", image=image,
                  parameters={"operation": "face_swap"})
    assert "background_removal" in err["error"] and "style_transfer" in err["error"]
    err = refused(client, "parameters.operation_parameters", task_type="visualization", image=image,
                  parameters={"operation": "style_transfer", "operation_parameters": {"style": "bogus"}})
    assert "style" in err["fields"][0]["message"]
    refused(client, "parameters.operation_parameters", task_type="visualization", image=image,
            parameters={"operation": "background_removal", "operation_parameters": {"shadow": True}})
    # The operation's own submit checks, moved under operation_parameters.
    refused(client, "parameters.operation_parameters.style", task_type="visualization", image=image,
            parameters={"operation": "style_transfer"})
    refused(client, "parameters.operation_parameters.boxes[0]", task_type="visualization", image=image,
            parameters={"operation": "object_removal", "operation_parameters": {"boxes": [[250, 150, 100, 100]]}})
    refused(client, "parameters.operation", task_type="visualization", image=image, parameters={})
    refused(client, "image", task_type="visualization", parameters={"operation": "background_removal"})
    refused(client, "parameters.extra", task_type="visualization", image=image,
            parameters={"operation": "background_removal", "extra": 1})


# --- export ----------------------------------------------------------------------------------------


def pdf_of(client: httpx.Client, result: dict[str, Any]) -> PdfReader:
    entry = next(a for a in result["artifacts"] if a["name"] == "report.pdf")
    assert entry["media_type"] == "application/pdf"
    return PdfReader(io.BytesIO(artifact(client, result, "report.pdf")))


def test_export_pdf_has_a_summary_and_a_page_per_job_with_text_and_images(client):
    with_image = submit(client, "diagnostic", image=b64(png(coffee())), parameters={"duration_s": 0.2})
    failed = submit(client, "diagnostic", parameters={"fail": True})
    styled = submit(client, "style_transfer", image=b64(png(coffee())), parameters={"style": "oil"})
    ids = [with_image, failed, styled]
    for task_id in ids:
        assert wait_status(client, task_id, timeout_s=120)["status"] in {"SUCCESS", "FAILURE"}
    result = finish(client, "export", parameters={"task_ids": ids, "title": "Quarterly jobs"})
    assert [j["task_id"] for j in result["jobs"]] == ids
    assert [j["status"] for j in result["jobs"]] == ["SUCCESS", "FAILURE", "SUCCESS"]

    pdf = pdf_of(client, result)
    assert len(pdf.pages) == result["pages"] == 1 + len(ids)  # the summary, then one page per job
    texts = [page.extract_text() for page in pdf.pages]
    summary = texts[0]
    assert "Quarterly jobs" in summary and "Summary" in summary
    positions = [summary.find(task_id) for task_id in ids]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), "ids in the summary, in order"
    for n, (task_id, text) in enumerate(zip(ids, texts[1:]), start=2):
        assert task_id in text, f"page {n} does not name job {task_id}"
        assert f"Page {n} of {len(ids) + 1}" in text
        assert "Queued" in text and "Started" in text and "Finished" in text and "Attempts" in text
    assert "diagnostic failure requested" in texts[2]  # the failed job's error
    assert '"style": "oil"' in texts[3]  # its parameters
    # Images: the first job's input thumbnail and output thumbnail; none for the failed job (no
    # files); the styled job's input and output.
    counts = [len(page.images) for page in pdf.pages]
    assert counts[0] == 0 and counts[1] >= 2 and counts[2] == 0 and counts[3] >= 2, counts
    big = max(pdf.pages[3].images, key=lambda im: im.image.width * im.image.height).image
    assert big.width >= 250  # the output is shown large enough to see


def test_export_refuses_other_tenants_unknown_and_unfinished_ids(client, stack: Stack):
    mine = submit(client, "diagnostic", parameters={})
    assert wait_status(client, mine)["status"] == "SUCCESS"
    with stack.client() as other:
        theirs = submit(other, "diagnostic", parameters={})
        assert wait_status(other, theirs)["status"] == "SUCCESS"
        # The other tenant cannot export my job either.
        err = refused(other, "parameters.task_ids", task_type="export", parameters={"task_ids": [mine]})
        assert mine in err["error"]
    unknown = str(uuid.uuid4())
    err = refused(client, "parameters.task_ids", task_type="export", parameters={"task_ids": [mine, theirs, unknown]})
    assert theirs in err["error"] and unknown in err["error"] and mine not in err["error"]
    assert "not yours" in err["error"]
    running = submit(client, "diagnostic", parameters={"duration_s": 30, "steps": 60})
    err = refused(client, "parameters.task_ids", task_type="export", parameters={"task_ids": [mine, running]})
    assert "not finished" in err["error"] and running in err["error"]
    assert client.post(f"{TASKS}/{running}/cancel/").status_code == 200
    refused(client, "parameters.task_ids", task_type="export", parameters={"task_ids": []})
    refused(client, "parameters.task_ids", task_type="export", parameters={"task_ids": [mine] * 101})
    refused(client, "parameters.task_ids", task_type="export", parameters={"task_ids": ["../etc/passwd"]})
    refused(client, "parameters", task_type="export")


def test_export_fails_naming_a_job_that_expired_before_it_ran(client, stack: Stack):
    done = submit(client, "diagnostic", parameters={})
    gone = submit(client, "diagnostic", parameters={})
    for task_id in (done, gone):
        assert wait_status(client, task_id)["status"] == "SUCCESS"
    with queue_held(client) as release:
        export = submit(client, "export", parameters={"task_ids": [done, gone]})
        stack.redis.delete(keys.job(gone))  # its retention ran out while the export waited
        release()
        status = wait_status(client, export, timeout_s=90)
    assert status["status"] == "FAILURE", status
    assert gone in status["error"] and done not in status["error"]


# --- cost_infographic ------------------------------------------------------------------------------


def seconds_of(status: dict[str, Any]) -> float:
    def ts(value: str) -> float:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()

    return ts(status["finished_at"]) - ts(status["started_at"])


@pytest.mark.slow  # seconds of rendering
def test_cost_infographic_numbers_match_the_usage_the_test_created(stack: Stack):
    tenant = f"t-cost-{uuid.uuid4().hex[:8]}"
    with stack.client(tenant=tenant) as client:
        plan = [("cpu", 0.3, False), ("cpu", 0.6, False), ("cpu", 0.0, True), ("gpu", 0.4, False)]
        ids = [submit(client, "diagnostic", parameters={"duration_s": d, "queue": q, "fail": f}) for q, d, f in plan]
        statuses = [wait_status(client, task_id) for task_id in ids]
        assert [s["status"] for s in statuses] == ["SUCCESS", "SUCCESS", "FAILURE", "SUCCESS"]
        per_queue: dict[str, list[float]] = {"cpu": [], "gpu": []}
        for (queue, duration, _), status in zip(plan, statuses):
            measured = seconds_of(status)
            assert measured >= duration
            per_queue[queue].append(measured)
        expected_s = sum(map(sum, per_queue.values()))

        prices = {"diagnostic": {"per_second": 0.5, "per_job": 0.1}}
        result = finish(client, "cost_infographic", parameters={"prices": prices, "currency": "EUR"})
        today = datetime.now(UTC).date().isoformat()
        assert result["period"]["until"] == today and result["period"]["days"] == 7
        assert result["price_source"] == "request" and result["currency"] == "EUR"
        (row,) = result["by_type"]  # only what this tenant ran; the infographic itself was not finished yet
        assert row["task_type"] == "diagnostic" and row["jobs"] == len(plan)
        assert row["seconds"] == pytest.approx(expected_s, abs=0.005 * len(plan))
        assert row["statuses"] == {"SUCCESS": 3, "FAILURE": 1}
        assert row["cost"] == pytest.approx(0.1 * len(plan) + 0.5 * expected_s, abs=0.01)
        queues = {q["queue"]: q for q in result["by_queue"]}
        assert queues["cpu"]["jobs"] == 3 and queues["gpu"]["jobs"] == 1
        assert queues["cpu"]["seconds"] == pytest.approx(sum(per_queue["cpu"]), abs=0.02)
        assert queues["gpu"]["seconds"] == pytest.approx(sum(per_queue["gpu"]), abs=0.01)
        assert result["totals"]["jobs"] == len(plan) and result["totals"]["cost"] == pytest.approx(row["cost"])
        assert [d["day"] for d in result["by_day"]] == [today]

        image = Image.open(io.BytesIO(artifact(client, result, "cost_infographic.png")))
        assert image.format == "PNG" and image.width >= 1200 and image.height >= 800
        assert base64.b64decode(result["image_data"]) == artifact(client, result, "cost_infographic.png")
        svg = artifact(client, result, "cost_infographic.svg").decode()
        texts = " ".join(re.findall(r"<text[^>]*>(.*?)</text>", svg, re.S))
        for word in ("diagnostic", "cpu", "gpu", "Jobs per job type", "Cost per job type", "EUR"):
            assert word in texts, word

        # The counters outlive the job records: 400 days, one hash per tenant and UTC day.
        ttl = stack.redis.ttl(keys.usage(tenant, today))
        assert 399 * 86400 < ttl <= 400 * 86400
        # Another period holds none of it; another tenant sees none of it.
        old = finish(client, "cost_infographic", parameters={"since": "2020-01-01", "until": "2020-01-03T12:00:00Z"})
        assert old["totals"] == {"jobs": 0, "seconds": 0, "cost": 0} and old["period"]["days"] == 3
    with stack.client() as stranger:
        theirs = finish(stranger, "cost_infographic")
        assert theirs["totals"]["jobs"] == 0 and theirs["price_source"] == "none"


def test_cost_infographic_refuses_bad_periods_and_prices(client):
    refused(client, "parameters.since", task_type="cost_infographic", parameters={"since": "last week"})
    refused(client, "parameters.until", task_type="cost_infographic",
            parameters={"since": "2026-02-01", "until": "2026-01-01"})
    refused(client, "parameters.until", task_type="cost_infographic",
            parameters={"since": "2020-01-01", "until": "2026-01-01"})
    refused(client, "parameters.prices.diagnostic.per_second", task_type="cost_infographic",
            parameters={"prices": {"diagnostic": {"per_second": -1}}})
    refused(client, "parameters.prices.diagnostic.per_minute", task_type="cost_infographic",
            parameters={"prices": {"diagnostic": {"per_minute": 1}}})


def test_deployment_prices_come_from_aitasks_prices():
    from aitasks.jobs.usage import UsageRow
    from aitasks.processors.reports.cost_infographic import compute
    from aitasks.settings import Settings

    settings = Settings(prices='{"diagnostic": {"per_job": 2}, "*": {"per_second": 0.25}}', currency="CHF")
    rows = [UsageRow("2026-11-28", "diagnostic", "cpu", 3, 10.0), UsageRow("2026-11-29", "diagnostic", "gpu", 1, 2.0),
            UsageRow("2026-11-29", "style_transfer", "cpu", 2, 8.0)]
    numbers = compute(rows, settings.prices)
    costs = {t["task_type"]: t["cost"] for t in numbers["by_type"]}
    assert costs == {"diagnostic": 8.0, "style_transfer": 2.0}
    assert numbers["totals"] == {"jobs": 6, "seconds": 20.0, "cost": 10.0}
    assert compute(rows, {})["unpriced_types"] == ["diagnostic", "style_transfer"]


@pytest.mark.slow  # a fresh interpreter
def test_the_api_process_never_loads_the_plot_and_pdf_libraries():
    code = ("import sys; from aitasks.processors.registry import load_all; load_all(); import aitasks.api.app; "
            "print(sorted(m for m in ('matplotlib', 'reportlab', 'numpy', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"AITASKS_REDIS_URL": "redis://127.0.0.1:1/0", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_an_operation_run_inside_a_visualization_reports_into_its_sub_range():
    from aitasks.jobs.models import Artifact, Job
    from aitasks.processors.reports.common import SubContext
    from aitasks.worker.context import JobContext

    class Parent(JobContext):
        def __init__(self) -> None:
            super().__init__(Job(id="j1", type="visualization", tenant="t", queue="cpu"), None, None, 1, 1)  # type: ignore[arg-type]
            self.calls: list[Any] = []

        def progress(self, percent: float, message: str = "") -> None:
            self.calls.append((percent, message))

        def check_cancel(self) -> None:
            self.calls.append("check")

        def save_artifact(self, name: str, data: bytes, media_type: str | None = None) -> Artifact:
            self.calls.append(("save", name))
            return Artifact(name, media_type or "", len(data))

    parent = Parent()
    sub = SubContext(parent, 5, 85, "style_transfer")
    sub.progress(0, "start")
    sub.progress(50, "half")
    sub.progress(100)
    sub.check_cancel()
    sub.save_artifact("result.png", b"png", "image/png")
    assert parent.calls == [(5, "style_transfer: start"), (45, "style_transfer: half"), (85, "style_transfer"),
                            "check", ("save", "result.png")]
    assert sub.saved_data == {"result.png": b"png"} and [a.name for a in sub.artifacts] == ["result.png"]
