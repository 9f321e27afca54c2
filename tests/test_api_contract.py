"""The seeds' API contract and our extensions, over real HTTP against the real stack."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import time
import uuid
from typing import Any

import httpx
import pytest
from PIL import Image

from stack import TERMINAL, poll, submit, wait_status

TASKS = "/api/v1/tasks"


# --- helpers -------------------------------------------------------------------------------------


def make_image(width: int, height: int, fmt: str = "PNG") -> bytes:
    img = Image.new("RGB", (width, height))
    img.putdata([((x * 7) % 256, (y * 13) % 256, (x + y) % 256) for y in range(height) for x in range(width)])
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


def cancel_and_wait(client: httpx.Client, task_id: str) -> dict[str, Any]:
    r = client.post(f"{TASKS}/{task_id}/cancel/")
    assert r.status_code in (200, 400), r.text
    return wait_status(client, task_id)


def metrics(client: httpx.Client) -> dict[str, float]:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, float] = {}
    for line in r.text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def list_all(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    r = client.get(f"{TASKS}/", params=params)
    assert r.status_code == 200, r.text
    return r.json()["tasks"]  # type: ignore[no-any-return]


def long_job(client: httpx.Client, duration_s: float = 30) -> str:
    """A job that keeps the cpu worker busy until cancelled (it checks for cancellation often)."""
    return submit(client, parameters={"duration_s": duration_s, "steps": int(duration_s * 4)})


# --- the seeds' contract -------------------------------------------------------------------------


def test_submit_answers_202_pending_at_once_and_the_job_succeeds(client):
    r = client.post(f"{TASKS}/submit/", json={"task_type": "diagnostic", "parameters": {"steps": 3}})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "PENDING"
    assert isinstance(body["message"], str) and body["message"]
    task_id = body["task_id"]
    assert str(uuid.UUID(task_id)) == task_id
    assert body["task_type"] == "diagnostic" and body["queue"] == "cpu"
    assert body["status_url"].endswith(f"{TASKS}/{task_id}/status/")
    assert r.headers["location"] == body["status_url"]

    final = wait_status(client, task_id)
    assert final["status"] == "SUCCESS", final
    assert set(final) >= {"task_id", "status", "progress", "message", "result_available"}
    assert final["task_id"] == task_id
    assert final["progress"] == 100
    assert final["result_available"] is True
    assert "error" not in final
    assert final["attempts"] == 1
    assert final["created_at"] <= final["started_at"] <= final["finished_at"]

    r = client.get(f"{TASKS}/{task_id}/result/")
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["task_id"] == task_id and res["status"] == "SUCCESS"
    assert res["result"]["parameters"]["steps"] == 3
    assert res["result"]["attempts"] == 1
    assert res["result"]["artifacts"] == []

    r = client.post(f"{TASKS}/{task_id}/cancel/")
    assert r.status_code == 400, r.text
    assert r.json()["status"] == "SUCCESS" and r.json()["error"]
    assert wait_status(client, task_id)["status"] == "SUCCESS"


def test_a_cpu_bound_diagnostic_job_spends_the_cpu_time_it_was_asked_for(client):
    """``busy_s``: computing, not sleeping (the several-hosts benchmark's load): its thread's CPU time."""
    task_id = submit(client, parameters={"busy_s": 0.3})
    assert wait_status(client, task_id)["status"] == "SUCCESS"
    result = client.get(f"{TASKS}/{task_id}/result/").json()["result"]
    assert 0.3 <= result["cpu_s"] < 5 and result["parameters"]["busy_s"] == 0.3, result


def test_running_job_result_202_then_cancel_200_then_410_and_400(client):
    task_id = long_job(client)
    running = wait_status(client, task_id, {"PROCESSING"} | TERMINAL)
    assert running["status"] == "PROCESSING", running
    assert running["result_available"] is False

    r = client.get(f"{TASKS}/{task_id}/result/")
    assert r.status_code == 202, r.text
    assert r.json()["task_id"] == task_id
    assert r.json()["status"] == "PROCESSING"

    r = client.post(f"{TASKS}/{task_id}/cancel/")
    assert r.status_code == 200, r.text
    assert r.json()["task_id"] == task_id and r.json()["message"]

    final = wait_status(client, task_id)
    assert final["status"] == "REVOKED", final
    assert final["result_available"] is False

    r = client.get(f"{TASKS}/{task_id}/result/")
    assert r.status_code == 410, r.text
    assert r.json()["status"] == "REVOKED" and r.json()["error"]

    r = client.post(f"{TASKS}/{task_id}/cancel/")
    assert r.status_code == 400, r.text
    assert r.json()["status"] == "REVOKED"


def test_queued_job_cancelled_before_it_starts(client):
    blocker = long_job(client)
    assert wait_status(client, blocker, {"PROCESSING"} | TERMINAL)["status"] == "PROCESSING"
    queued = submit(client)
    assert client.get(f"{TASKS}/{queued}/result/").status_code == 202
    r = client.post(f"{TASKS}/{queued}/cancel/")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "REVOKED"
    assert client.get(f"{TASKS}/{queued}/status/").json()["status"] == "REVOKED"
    assert cancel_and_wait(client, blocker)["status"] == "REVOKED"
    # The worker skips the cancelled job: it never ran, and the worker serves the next one.
    follow = submit(client)
    assert wait_status(client, follow)["status"] == "SUCCESS"
    final = client.get(f"{TASKS}/{queued}/status/").json()
    assert final["status"] == "REVOKED" and final["started_at"] is None


def test_failed_job_status_error_result_500_and_cancel_400(client):
    task_id = submit(client, parameters={"fail": True})
    final = wait_status(client, task_id)
    assert final["status"] == "FAILURE", final
    assert "fail" in final["error"]
    assert final["error_type"]
    assert final["result_available"] is False
    assert final["attempts"] == 1  # a permanent failure is not retried

    r = client.get(f"{TASKS}/{task_id}/result/")
    assert r.status_code == 500, r.text
    body = r.json()
    assert body["task_id"] == task_id and body["status"] == "FAILURE"
    assert body["error"] == final["error"]

    r = client.post(f"{TASKS}/{task_id}/cancel/")
    assert r.status_code == 400, r.text
    assert r.json()["status"] == "FAILURE"


def test_paths_without_trailing_slash_work_too(client):
    r = client.post(f"{TASKS}/submit", json={"task_type": "diagnostic", "parameters": {"steps": 2}})
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    assert r.json()["status"] == "PENDING"
    deadline = time.monotonic() + 60
    while True:
        r = client.get(f"{TASKS}/{task_id}/status")
        assert r.status_code == 200, r.text
        if r.json()["status"] in TERMINAL or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert r.json()["status"] == "SUCCESS"
    r = client.get(f"{TASKS}/{task_id}/result")
    assert r.status_code == 200 and r.json()["result"]["parameters"]["steps"] == 2
    r = client.post(f"{TASKS}/{task_id}/cancel")
    assert r.status_code == 400
    r = client.get(TASKS)
    assert r.status_code == 200 and [t["task_id"] for t in r.json()["tasks"]] == [task_id]


def test_unknown_id_is_404_json_everywhere(client):
    missing = str(uuid.uuid4())
    answers = [
        client.get(f"{TASKS}/{missing}/status/"),
        client.get(f"{TASKS}/{missing}/result/"),
        client.post(f"{TASKS}/{missing}/cancel/"),
        client.get(f"{TASKS}/{missing}/events"),
        client.get(f"{TASKS}/{missing}/artifacts/thumbnail.png"),
        client.get(f"{TASKS}/not-even-a-uuid/status"),
    ]
    for r in answers:
        assert r.status_code == 404, (r.request.url, r.text)
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["code"] == "not_found" and r.json()["error"]


# --- listing -------------------------------------------------------------------------------------


def test_list_is_newest_first_and_filters_by_status_and_type(client):
    assert list_all(client) == []
    ids = []
    for i in range(5):
        ids.append(submit(client, parameters={"fail": i % 2 == 1}))
        time.sleep(0.005)  # distinct creation milliseconds, so "newest first" is one order
    finals = {i: wait_status(client, i)["status"] for i in ids}
    failed = [i for i in ids if finals[i] == "FAILURE"]
    succeeded = [i for i in ids if finals[i] == "SUCCESS"]
    assert len(failed) == 2 and len(succeeded) == 3

    listed = list_all(client)
    assert [t["task_id"] for t in listed] == ids[::-1]
    assert all(t["task_type"] == "diagnostic" for t in listed)
    assert {t["task_id"]: t["status"] for t in listed} == finals

    assert [t["task_id"] for t in list_all(client, status="FAILURE")] == failed[::-1]
    assert [t["task_id"] for t in list_all(client, status="success")] == succeeded[::-1]
    assert [t["task_id"] for t in list_all(client, status="SUCCESS,FAILURE")] == ids[::-1]
    assert [t["task_id"] for t in list_all(client, status=["FAILURE", "REVOKED"])] == failed[::-1]
    assert list_all(client, status="PENDING") == []
    assert [t["task_id"] for t in list_all(client, task_type="diagnostic")] == ids[::-1]
    assert list_all(client, task_type="no_such_type") == []

    r = client.get(f"{TASKS}/", params={"status": "BOGUS"})
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "status"


def test_list_cursor_pagination_has_no_duplicates_or_gaps(client):
    ids = []
    for _ in range(7):
        ids.append(submit(client))
        time.sleep(0.005)
    pages: list[list[str]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor:
            params["cursor"] = cursor
        r = client.get(f"{TASKS}/", params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append([t["task_id"] for t in page["tasks"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 10, pages
    flat = [i for p in pages for i in p]
    assert flat == ids[::-1]
    assert len(set(flat)) == len(flat)
    assert [len(p) for p in pages[:2]] == [3, 3]

    # A filtered walk paginates the same way.
    for i in ids:
        wait_status(client, i)
    flat = []
    cursor = None
    for _ in range(10):
        params = {"limit": 2, "status": "SUCCESS"}
        if cursor:
            params["cursor"] = cursor
        page = client.get(f"{TASKS}/", params=params).json()
        flat += [t["task_id"] for t in page["tasks"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert flat == ids[::-1]

    r = client.get(f"{TASKS}/", params={"cursor": "%%%not-a-cursor"})
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "cursor"


# --- Idempotency-Key and Prefer: wait -----------------------------------------------------------


def test_idempotency_key_returns_the_first_task_per_tenant(stack, client):
    key = f"idem-{uuid.uuid4()}"
    body = {"task_type": "diagnostic", "parameters": {"steps": 2}}
    first = client.post(f"{TASKS}/submit/", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    again = client.post(f"{TASKS}/submit/", json=body, headers={"Idempotency-Key": key})
    assert again.status_code == 200, again.text
    assert again.json()["task_id"] == first.json()["task_id"]
    other_key = client.post(f"{TASKS}/submit/", json=body, headers={"Idempotency-Key": key + "-2"})
    assert other_key.status_code == 202 and other_key.json()["task_id"] != first.json()["task_id"]

    with stack.client() as other_tenant:
        theirs = other_tenant.post(f"{TASKS}/submit/", json=body, headers={"Idempotency-Key": key})
        assert theirs.status_code == 202, theirs.text
        assert theirs.json()["task_id"] != first.json()["task_id"]
        assert wait_status(other_tenant, theirs.json()["task_id"])["status"] == "SUCCESS"

    ids = {t["task_id"] for t in list_all(client)}
    assert ids == {first.json()["task_id"], other_key.json()["task_id"]}
    # Still the first task once it has finished.
    assert wait_status(client, first.json()["task_id"])["status"] == "SUCCESS"
    late = client.post(f"{TASKS}/submit/", json=body, headers={"Idempotency-Key": key})
    assert late.status_code == 200 and late.json()["task_id"] == first.json()["task_id"]


def test_prefer_wait_returns_the_result_when_done_in_time(client):
    r = client.post(f"{TASKS}/submit/", json={"task_type": "diagnostic", "parameters": {"steps": 2}},
                    headers={"Prefer": "wait=60"}, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "SUCCESS"
    assert body["result_available"] is True
    assert body["result"]["parameters"]["steps"] == 2
    assert body["result"]["attempts"] == 1
    assert client.get(f"{TASKS}/{body['task_id']}/status/").json()["status"] == "SUCCESS"

    failed = client.post(f"{TASKS}/submit/", json={"task_type": "diagnostic", "parameters": {"fail": True}},
                         headers={"Prefer": "wait=60"}, timeout=120)
    assert failed.status_code == 200, failed.text
    assert failed.json()["status"] == "FAILURE" and failed.json()["error"]


def test_a_waiting_submit_inlines_an_image_result_unless_inline_false(client):
    """A waiting submit's image result comes with its base64 (seed 001's shape); `?inline=false` leaves it
    out and the file is fetched from its URL, the same bytes; a bad `inline` is a 400 that creates nothing."""
    picture = io.BytesIO()
    Image.new("RGB", (40, 30), "green").save(picture, "PNG")
    before = {t["task_id"] for t in list_all(client)}
    bad = client.post(f"{TASKS}/submit/?inline=maybe", data={"task_type": "diagnostic"},
                      files={"image": ("p.png", picture.getvalue(), "image/png")}, headers={"Prefer": "wait=60"})
    assert bad.status_code == 400 and bad.json()["fields"][0]["field"] == "inline", bad.text
    assert {t["task_id"] for t in list_all(client)} == before
    answers = {}
    for query in ("", "?inline=false"):
        r = client.post(f"{TASKS}/submit/{query}", data={"task_type": "diagnostic"},
                        files={"image": ("p.png", picture.getvalue(), "image/png")},
                        headers={"Prefer": "wait=60"}, timeout=120)
        assert r.status_code == 200 and r.json()["status"] == "SUCCESS", r.text
        answers[query] = r.json()["result"]
    inlined, named = answers[""], answers["?inline=false"]
    assert inlined["image_artifact"] == named["image_artifact"] == "thumbnail.png"
    url = next(a["url"] for a in named["artifacts"] if a["name"] == named["image_artifact"])
    assert "image_data" not in named and url.endswith("/artifacts/thumbnail.png")
    fetched = client.get(url)
    assert fetched.status_code == 200
    assert Image.open(io.BytesIO(fetched.content)).size == Image.open(
        io.BytesIO(base64.b64decode(inlined["image_data"]))).size == (40, 30)


def test_prefer_wait_answers_202_when_not_done_and_refuses_over_60(client):
    r = client.post(f"{TASKS}/submit/", json={"task_type": "diagnostic",
                                              "parameters": {"duration_s": 30, "steps": 120}},
                    headers={"Prefer": "wait=1"}, timeout=60)
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "PENDING"
    task_id = r.json()["task_id"]
    assert client.get(f"{TASKS}/{task_id}/status/").json()["status"] not in TERMINAL
    assert cancel_and_wait(client, task_id)["status"] == "REVOKED"

    r = client.post(f"{TASKS}/submit/", json={"task_type": "diagnostic"}, headers={"Prefer": "wait=61"})
    assert r.status_code == 400, r.text
    assert r.json()["fields"][0]["field"] == "Prefer"
    assert [t["task_id"] for t in list_all(client)] == [task_id]  # the refused request created nothing


# --- files ---------------------------------------------------------------------------------------


def check_image_result(client: httpx.Client, task_id: str, original: bytes, fmt: str) -> dict[str, Any]:
    final = wait_status(client, task_id)
    assert final["status"] == "SUCCESS", final
    r = client.get(f"{TASKS}/{task_id}/result/")
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    with Image.open(io.BytesIO(original)) as img:
        width, height = img.size
    assert result["image"]["width"] == width and result["image"]["height"] == height
    assert result["image"]["format"] == fmt
    assert result["image"]["sha256"] == hashlib.sha256(original).hexdigest()
    assert result["image"]["bytes"] == len(original)

    thumb = base64.b64decode(result["image_data"], validate=True)
    with Image.open(io.BytesIO(thumb)) as img:
        assert img.format == "PNG"
        assert max(img.size) <= 128
        assert max(img.size) == min(128, max(width, height))

    arts = {a["name"]: a for a in result["artifacts"]}
    assert set(arts) == {"thumbnail.png"}
    art = arts["thumbnail.png"]
    assert art["media_type"] == "image/png" and art["bytes"] == len(thumb)
    assert art["url"].startswith("http") and art["url"].endswith(f"{TASKS}/{task_id}/artifacts/thumbnail.png")
    download = client.get(art["url"])
    assert download.status_code == 200, download.text
    assert download.content == thumb
    assert download.headers["content-type"].startswith("image/png")
    no_key = httpx.get(art["url"], timeout=30)
    assert no_key.status_code == 401

    r = client.get(f"{TASKS}/{task_id}/result/", params={"inline": "false"})
    assert r.status_code == 200 and "image_data" not in r.json()["result"]
    return result


def test_multipart_image_upload(client):
    original = make_image(300, 200)
    r = client.post(f"{TASKS}/submit/", data={"task_type": "diagnostic", "parameters": json.dumps({"steps": 2})},
                    files={"image": ("photo.png", original, "image/png")})
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    result = check_image_result(client, task_id, original, "PNG")
    assert result["parameters"]["steps"] == 2
    # The uploaded input is kept as a file of the job too, byte for byte.
    r = client.get(f"{TASKS}/{task_id}/artifacts/input-image.png")
    assert r.status_code == 200 and r.content == original
    # Nothing else in the job's folder is served.
    assert client.get(f"{TASKS}/{task_id}/artifacts/..%2Fsecret").status_code == 404
    assert client.get(f"{TASKS}/{task_id}/artifacts/other.png").status_code == 404


def test_base64_image_field_and_data_uri(client):
    jpeg = make_image(160, 240, "JPEG")
    task_id = submit(client, image=base64.b64encode(jpeg).decode())
    check_image_result(client, task_id, jpeg, "JPEG")

    png = make_image(40, 30)
    task_id = submit(client, image="data:image/png;base64," + base64.b64encode(png).decode())
    result = check_image_result(client, task_id, png, "PNG")
    assert result["image"]["thumbnail"] == {"width": 40, "height": 30}


# --- catalog, operations, docs ------------------------------------------------------------------


def test_task_types_lists_diagnostic_with_schema_queue_and_limits(stack):
    r = httpx.get(f"{stack.url}/api/v1/task-types", timeout=30)
    assert r.status_code == 200, r.text
    types = {t["name"]: t for t in r.json()}
    diag = types["diagnostic"]
    assert diag["queue"] == "cpu"
    assert diag["description"]
    schema = diag["input_schema"]
    assert schema["type"] == "object"
    assert {"parameters", "image"} <= set(schema["properties"])
    assert diag["file_inputs"] == ["image"]
    limits = diag["limits"]
    assert limits["soft_time_limit_s"] == 240 and limits["time_limit_s"] == 300
    assert limits["retention_s"] == 3600
    assert limits["max_upload_bytes"] > 0 and limits["max_image_pixels"] > 0
    assert diag["retry"]["max_retries"] == 3
    assert diag["examples"] and diag["examples"][0]["task_type"] == "diagnostic"
    # The schema names the parameters the API validates (steps >= 1).
    defs = json.dumps(schema)
    assert "duration_s" in defs and "fail_times" in defs


def test_healthz_and_readyz(stack):
    r = httpx.get(f"{stack.url}/healthz", timeout=30)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    r = httpx.get(f"{stack.url}/readyz", timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready" and body["redis"] == "ok" and body["database"] == "ok"
    assert "degraded" not in body
    assert body["workers"]["cpu"] >= 1 and body["workers"]["gpu"] >= 1


def test_metrics_change_when_jobs_run(stack, client):
    sub = 'aitasks_jobs_submitted_total{task_type="diagnostic"}'
    ok = 'aitasks_jobs_finished_total{task_type="diagnostic",status="SUCCESS"}'
    failed = 'aitasks_jobs_finished_total{task_type="diagnostic",status="FAILURE"}'
    count = 'aitasks_job_duration_seconds_count{task_type="diagnostic"}'
    inf = 'aitasks_job_duration_seconds_bucket{task_type="diagnostic",le="+Inf"}'
    depth = 'aitasks_queue_depth{queue="cpu"}'

    before = metrics(client)
    assert before['aitasks_workers{queue="cpu"}'] >= 1 and before['aitasks_workers{queue="gpu"}'] >= 1
    assert {depth, 'aitasks_queue_depth{queue="gpu"}', sub, count, inf} <= set(before)
    assert before[count] == before[inf]

    good = submit(client, parameters={"duration_s": 0.2})
    bad = submit(client, parameters={"fail": True})
    assert wait_status(client, good)["status"] == "SUCCESS"
    assert wait_status(client, bad)["status"] == "FAILURE"
    after = metrics(client)
    assert after[sub] >= before[sub] + 2
    assert after[ok] >= before.get(ok, 0) + 1
    assert after[failed] >= before.get(failed, 0) + 1
    assert after[count] >= before[count] + 2
    assert after['aitasks_job_duration_seconds_sum{task_type="diagnostic"}'] >= \
        before['aitasks_job_duration_seconds_sum{task_type="diagnostic"}'] + 0.2
    assert after[inf] == after[count]

    # A job waiting behind a running one shows in the queue depth and in the running gauge.
    blocker = long_job(client)
    assert wait_status(client, blocker, {"PROCESSING"} | TERMINAL)["status"] == "PROCESSING"
    queued = submit(client)
    assert metrics(client)[depth] >= 1
    # The running gauge comes from worker heartbeats, so it may lag by one beat (2 s).
    poll(lambda: metrics(client)["aitasks_jobs_running"] >= 1, "the running gauge to count the blocker")
    assert cancel_and_wait(client, blocker)["status"] == "REVOKED"
    assert wait_status(client, queued)["status"] == "SUCCESS"
    poll(lambda: metrics(client)[depth] == 0, "the cpu queue to drain")
    done = metrics(client)
    assert done['aitasks_jobs_finished_total{task_type="diagnostic",status="REVOKED"}'] >= 1


def test_openapi_documents_the_paths(stack):
    r = httpx.get(f"{stack.url}/openapi.json", timeout=30)
    assert r.status_code == 200
    doc = r.json()
    paths = doc["paths"]
    for path, method in [
        ("/api/v1/tasks/submit/", "post"),
        ("/api/v1/tasks/", "get"),
        ("/api/v1/tasks/{task_id}/status/", "get"),
        ("/api/v1/tasks/{task_id}/result/", "get"),
        ("/api/v1/tasks/{task_id}/cancel/", "post"),
        ("/api/v1/tasks/{task_id}/events", "get"),
        ("/api/v1/tasks/{task_id}/artifacts/{name}", "get"),
        ("/api/v1/task-types", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ]:
        assert method in paths.get(path, {}), f"{method.upper()} {path} missing from /openapi.json"
    submit_op = paths["/api/v1/tasks/submit/"]["post"]
    content = submit_op["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)
    assert content["application/json"]["examples"]
    assert {"202", "400", "401", "413"} <= set(submit_op["responses"])
    assert {p["name"] for p in submit_op["parameters"]} == {"Idempotency-Key", "Prefer", "async_processing", "inline"}
    # Every task endpoint (and the stream tokens) says it needs the Bearer key; the catalog and operations do not.
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    for path, ops in paths.items():
        for op in ops.values():
            needs_key = path.startswith(("/api/v1/tasks", "/api/v1/stream-tokens", "/api/v1/system", "/api/v1/limits",
                                         "/api/v1/tenants", "/v1/",
                                         "/api/tasks/", "/api/visualizations", "/api/exports",
                                         "/api/v1/documents", "/api/ingest/", "/api/documents/", "/api/v1/search"))
            assert (op.get("security") == [{"bearer": []}]) == needs_key, path
    # Only one spelling of each path in the schema.
    assert "/api/v1/tasks/submit" not in paths
    r = httpx.get(f"{stack.url}/docs", timeout=30)
    assert r.status_code == 200 and "swagger" in r.text.lower()


# --- routing -------------------------------------------------------------------------------------


def test_parameters_queue_gpu_runs_on_the_gpu_worker(stack, client):
    r = client.post(f"{TASKS}/submit/", json={"task_type": "diagnostic", "parameters": {"queue": "gpu"}})
    assert r.status_code == 202, r.text
    assert r.json()["queue"] == "gpu"
    gpu_id = r.json()["task_id"]
    cpu_id = submit(client)
    gpu_final = wait_status(client, gpu_id)
    cpu_final = wait_status(client, cpu_id)
    assert gpu_final["status"] == "SUCCESS" and gpu_final["queue"] == "gpu"
    assert cpu_final["status"] == "SUCCESS" and cpu_final["queue"] == "cpu"

    gpu_pid = client.get(f"{TASKS}/{gpu_id}/result/").json()["result"]["worker_pid"]
    cpu_pid = client.get(f"{TASKS}/{cpu_id}/result/").json()["result"]["worker_pid"]
    gpu_worker = stack.workers["worker-gpu"]
    cpu_worker = stack.workers["worker-cpu"]
    assert gpu_pid in gpu_worker.children() + [gpu_worker.pid]
    assert cpu_pid in cpu_worker.children() + [cpu_worker.pid]
    assert gpu_pid != cpu_pid


@pytest.mark.slow  # seconds of waiting
def test_status_progress_is_reported_while_running(client):
    task_id = submit(client, parameters={"duration_s": 4, "steps": 4})
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = client.get(f"{TASKS}/{task_id}/status/").json()
        if body["status"] == "PROCESSING" and (not seen or body["progress"] != seen[-1]):
            seen.append(body["progress"])
            assert re.fullmatch(r"step \d+/4", body["message"]) or body["progress"] == 0, body
        if body["status"] in TERMINAL:
            break
        time.sleep(0.05)
    assert body["status"] == "SUCCESS"
    assert seen == sorted(seen) and len(seen) >= 2, seen
    assert all(0 <= p <= 100 for p in seen)


def test_system_shows_workers_running_jobs_and_recent_throughput(stack, client):
    done = submit(client)
    failed = submit(client, parameters={"fail": True})
    assert wait_status(client, done)["status"] == "SUCCESS"
    assert wait_status(client, failed)["status"] == "FAILURE"
    blocker = long_job(client)
    assert wait_status(client, blocker, {"PROCESSING"} | TERMINAL)["status"] == "PROCESSING"

    def running_blocker() -> dict[str, Any] | None:
        body = client.get("/api/v1/system", params={"minutes": 5}).json()
        runs = [r for w in body["workers"] for r in w["running"]]
        return body if any(r.get("task_id") == blocker for r in runs) else None

    body = poll(running_blocker, "the blocker on a worker's running list", timeout_s=30)
    assert {q for w in body["workers"] for q in w["queues"]} == {"cpu", "gpu"}
    assert len(body["history"]) == 5 and body["history"][-1]["succeeded"] >= 1 and body["history"][-1]["failed"] >= 1
    assert body["per_minute"] > 0 and 0 < body["failure_rate"] < 1
    # Another tenant sees that a diagnostic job runs, not its id.
    with stack.client() as other:
        runs = [r for w in other.get("/api/v1/system").json()["workers"] for r in w["running"]]
        assert any(r["task_type"] == "diagnostic" for r in runs) and all("task_id" not in r for r in runs)
    assert client.get("/api/v1/system", params={"minutes": 0}).status_code == 400
    assert cancel_and_wait(client, blocker)["status"] == "REVOKED"
