"""Seed 003's surface over real workers: its submit paths with ``?async_processing``, the
``/api/tasks/{id}/...`` aliases and the WebSocket envelope."""

from __future__ import annotations

import base64
import io
import time
import uuid
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from stack import (
    Stack, key_of, queue_held, submit, wait_status, ws_open, ws_recv, ws_refused, ws_rest,
)

TASKS = "/api/v1/tasks"
SEED_ACCEPTED = {"task_id", "status", "status_url", "websocket_url"}


def png_b64(width: int = 96, height: int = 64) -> str:
    rng = np.random.default_rng(3)
    array = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    array[16:48, 24:72] = (230, 40, 40)  # a red block, so styles visibly change something
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def comparison_body(**parameters: Any) -> dict[str, Any]:
    variants = [{"task_type": "style_transfer", "parameters": {"style": "detail"}},
                {"task_type": "style_transfer", "parameters": {"style": "pencil"}}]
    return {"image": png_b64(), "parameters": {"variants": variants, "tile_px": 64, **parameters}}


def visualization_body() -> dict[str, Any]:
    return {"image": png_b64(), "parameters": {"operation": "style_transfer",
                                               "operation_parameters": {"style": "cartoon"}}}


def seed_accepted(r: httpx.Response) -> str:
    assert r.status_code == 202, r.text
    body = r.json()
    task_id = body["task_id"]
    assert set(body) == SEED_ACCEPTED and body["status"] == "processing", body
    assert body["status_url"] == f"/api/tasks/{task_id}/status"
    assert body["websocket_url"] == f"/api/ws/tasks/{task_id}"
    assert r.headers["location"] == body["status_url"]
    return str(task_id)


def seed_status(client: httpx.Client, task_id: str) -> dict[str, Any]:
    r = client.get(f"/api/tasks/{task_id}/status")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def seed_wait(client: httpx.Client, task_id: str, timeout_s: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body = seed_status(client, task_id)
        if body["state"] in ("SUCCESS", "FAILURE", "REVOKED") or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


# --- submit paths: async (the default) -----------------------------------------------------------


def test_seed_submit_paths_answer_202_processing_at_once(client):
    grid = seed_accepted(client.post("/api/visualizations/compare", json=comparison_body()))
    preview = seed_accepted(client.post("/api/visualizations?async_processing=true", json=visualization_body()))
    # The status alias follows them to the end; the platform sees the same jobs with their types.
    for task_id, task_type in ((grid, "comparison"), (preview, "visualization")):
        assert seed_wait(client, task_id)["state"] == "SUCCESS"
        assert client.get(f"{TASKS}/{task_id}/status/").json()["task_type"] == task_type
    export = seed_accepted(client.post("/api/exports", json={"parameters": {"task_ids": [grid, preview]}}))
    assert seed_wait(client, export)["state"] == "SUCCESS", seed_status(client, export)
    result = client.get(f"/api/tasks/{export}/result").json()["result"]
    assert any(a["media_type"] == "application/pdf" for a in result["artifacts"]), result


def test_seed_paths_refuse_bad_input_naming_the_field(client):
    bad = comparison_body()
    bad["parameters"]["variants"][1]["parameters"]["style"] = "neon"
    r = client.post("/api/visualizations/compare", json=bad)
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "parameters.variants[1].parameters.style", r.text
    r = client.post("/api/visualizations/compare", json={**comparison_body(), "task_type": "diagnostic"})
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "task_type", r.text
    r = client.post("/api/visualizations/compare?async_processing=maybe", json=comparison_body())
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "async_processing", r.text
    r = client.post(f"{TASKS}/submit/?async_processing=2", json={"task_type": "diagnostic"})
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "async_processing", r.text
    r = client.post("/api/exports", json={"parameters": {"task_ids": [str(uuid.uuid4())]}})
    assert r.status_code == 400 and r.json()["fields"][0]["field"].startswith("parameters.task_ids"), r.text
    assert client.get(f"{TASKS}/").json()["tasks"] == []  # nothing was accepted
    r = httpx.post(f"{client.base_url}/api/visualizations/compare", json=comparison_body(), timeout=30)
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"


# --- submit paths: ?async_processing=false -------------------------------------------------------


def test_async_processing_false_answers_with_the_finished_result(client):
    started = time.monotonic()
    r = client.post("/api/visualizations/compare?async_processing=false", json=comparison_body(), timeout=90)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "SUCCESS" and body["task_type"] == "comparison" and body["progress"] == 100
    assert [t["label"] for t in body["result"]["tiles"]] == ["original", "style_transfer\nstyle=detail",
                                                             "style_transfer\nstyle=pencil"]
    grid = Image.open(io.BytesIO(base64.b64decode(body["result"]["image_data"])))
    assert grid.size == (body["result"]["grid"]["width"], body["result"]["grid"]["height"])
    assert time.monotonic() - started < 30

    r = client.post("/api/visualizations?async_processing=false", json=visualization_body(), timeout=90)
    assert r.status_code == 200 and r.json()["status"] == "SUCCESS", r.text
    assert r.json()["result"]["image_data"]

    # The platform's own path takes the seed's spelling too (no Prefer header: none applied).
    r = client.post(f"{TASKS}/submit/?async_processing=false", json={"task_type": "diagnostic",
                                                                   "parameters": {"steps": 2}}, timeout=90)
    assert r.status_code == 200 and "preference-applied" not in r.headers, r.text
    assert r.json()["status"] == "SUCCESS" and r.json()["result"]["parameters"]["steps"] == 2
    failed = client.post(f"{TASKS}/submit/?async_processing=false",
                         json={"task_type": "diagnostic", "parameters": {"fail": True}}, timeout=90)
    assert failed.status_code == 200 and failed.json()["status"] == "FAILURE" and failed.json()["error"]


@pytest.fixture(scope="module")
def short_wait(tmp_path_factory: pytest.TempPathFactory):
    s = Stack(tmp_path_factory.mktemp("seed003"), env={"AITASKS_SYNC_WAIT_S": "1.5"})
    try:
        yield s.start()
    finally:
        s.stop()


@pytest.mark.slow  # its own stack
def test_async_processing_false_past_its_bound_answers_202_with_the_task_id(short_wait):
    with short_wait.client() as client:
        slow = {"task_type": "diagnostic", "parameters": {"duration_s": 4, "steps": 4}}
        started = time.monotonic()
        r = client.post(f"{TASKS}/submit/?async_processing=false", json=slow)
        waited = time.monotonic() - started
        assert r.status_code == 202, r.text
        assert 1.4 < waited < 4, waited  # AITASKS_SYNC_WAIT_S=1.5, then the usual answer
        assert r.json()["status"] == "PENDING" and r.json()["message"] == "Task submitted successfully"
        platform_id = r.json()["task_id"]

        variants = [{"task_type": "diagnostic", "parameters": {"duration_s": 3}},
                    {"task_type": "diagnostic", "parameters": {"duration_s": 3}}]
        started = time.monotonic()
        seed_id = seed_accepted(client.post("/api/visualizations/compare?async_processing=false",
                                            json={"image": png_b64(), "parameters": {"variants": variants}}))
        assert 1.4 < time.monotonic() - started < 4
        assert seed_status(client, seed_id)["state"] in ("PENDING", "PROCESSING")  # behind the first job

        # Prefer: wait still says how long, over the setting.
        r = client.post(f"{TASKS}/submit/?async_processing=false", json=slow, headers={"Prefer": "wait=20"},
                        timeout=60)
        assert r.status_code == 200 and r.headers["preference-applied"] == "wait=20", r.text
        for task_id in (platform_id, seed_id):
            assert seed_wait(client, task_id)["state"] == "SUCCESS"


# --- /api/tasks/{id}/status|cancel|result ----------------------------------------------------------


@pytest.mark.slow  # seconds of waiting
def test_status_alias_has_the_seeds_shape(client):
    with queue_held(client) as release:
        task_id = submit(client, parameters={"duration_s": 2, "steps": 4})
        assert seed_status(client, task_id) == {"task_id": task_id, "state": "PENDING", "progress": 0,
                                                "status": "Task is waiting in queue"}
        release()
        while (now := seed_status(client, task_id))["state"] == "PENDING":
            time.sleep(0.02)
    assert set(now) == {"task_id", "state", "progress", "status"}
    assert now["state"] in ("PROCESSING", "SUCCESS")
    done = seed_wait(client, task_id)
    assert done == {"task_id": task_id, "state": "SUCCESS", "progress": 100, "status": "Task completed successfully"}
    failed = submit(client, parameters={"fail": True})
    wait_status(client, failed)
    body = seed_status(client, failed)
    assert body["state"] == "FAILURE" and body["status"] == "Task failed" and "parameters.fail=true" in body["error"]


def test_cancel_and_result_aliases_are_the_platforms(client):
    task_id = submit(client, parameters={"duration_s": 60, "steps": 240})
    r = client.get(f"/api/tasks/{task_id}/result")
    assert r.status_code == 202 and r.json()["status"] in ("PENDING", "PROCESSING"), r.text
    wait_status(client, task_id, {"PROCESSING"})
    r = client.post(f"/api/tasks/{task_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "PROCESSING", r.text
    assert seed_wait(client, task_id, 30)["state"] == "REVOKED"
    r = client.post(f"/api/tasks/{task_id}/cancel")
    assert r.status_code == 400 and r.json()["code"] == "invalid_state", r.text
    assert client.get(f"/api/tasks/{task_id}/result").status_code == 410

    done = submit(client, parameters={"steps": 3})
    wait_status(client, done)
    seed, ours = client.get(f"/api/tasks/{done}/result"), client.get(f"{TASKS}/{done}/result/")
    assert seed.status_code == ours.status_code == 200 and seed.json() == ours.json()
    failed = submit(client, parameters={"fail": True})
    wait_status(client, failed)
    r = client.get(f"/api/tasks/{failed}/result")
    assert r.status_code == 500 and r.json()["status"] == "FAILURE" and r.json()["error"]


def test_aliases_refuse_unknown_foreign_and_keyless(stack, client):
    task_id = submit(client)
    wait_status(client, task_id)
    with stack.client() as other:
        for method, path in (("GET", "status"), ("POST", "cancel"), ("GET", "result")):
            for c, tid in ((client, str(uuid.uuid4())), (other, task_id)):
                r = c.request(method, f"/api/tasks/{tid}/{path}")
                assert r.status_code == 404 and r.json()["code"] == "not_found", r.text
            r = httpx.request(method, f"{stack.url}/api/tasks/{task_id}/{path}", timeout=30)
            assert r.status_code == 401, r.text
        message, code = ws_refused(stack, f"/api/ws/tasks/{task_id}", key_of(other))
        assert code == 4404 and message["code"] == "not_found"
    message, code = ws_refused(stack, f"/api/ws/tasks/{task_id}", None)
    assert code == 4401 and message["code"] == "unauthorized"


# --- WS /api/ws/tasks/{id} ----------------------------------------------------------------------


def envelope_ok(message: dict[str, Any], task_id: str) -> None:
    assert set(message) == {"type", "data"} and message["type"] in ("progress", "complete", "error"), message
    assert {"task_id", "state", "progress", "status"} <= set(message["data"]) <= {
        "task_id", "state", "progress", "status", "result", "error"}, message
    assert message["data"]["task_id"] == task_id


@pytest.mark.slow  # seconds of waiting
def test_websocket_pushes_every_change_and_ends_with_complete(stack, client):
    key = key_of(client)
    with queue_held(client) as release:
        task_id = submit(client, parameters={"duration_s": 1.5, "steps": 3})
        with ws_open(stack, f"/api/ws/tasks/{task_id}", key) as ws:
            first = ws_recv(ws)
            release()
            rest, code = ws_rest(ws)
    messages = [first, *rest]
    assert code == 1000
    for m in messages:
        envelope_ok(m, task_id)
    assert [m["type"] for m in messages] == ["progress"] * (len(messages) - 1) + ["complete"]
    assert first["data"] == {"task_id": task_id, "state": "PENDING", "progress": 0, "status": "Task is waiting in queue"}
    steps = [m["data"]["status"] for m in messages if m["data"]["status"].startswith("step ")]
    assert steps == ["step 1/3", "step 2/3", "step 3/3"]  # each progress report pushed, none skipped
    progress = [m["data"]["progress"] for m in messages]
    assert progress == sorted(progress)
    last = messages[-1]["data"]
    assert last["state"] == "SUCCESS" and last["progress"] == 100 and last["result"]["parameters"]["steps"] == 3

    # A late subscriber gets the current (final) state first, then the close.
    with ws_open(stack, f"/api/ws/tasks/{task_id}", key) as ws:
        late, code = ws_rest(ws)
    assert code == 1000 and [m["type"] for m in late] == ["complete"] and late[0]["data"] == last


def test_websocket_ends_with_error_for_a_failed_or_cancelled_job(stack, client):
    key = key_of(client)
    failed = submit(client, parameters={"fail": True})
    with ws_open(stack, f"/api/ws/tasks/{failed}", key) as ws:
        messages, code = ws_rest(ws)
    assert code == 1000 and messages[-1]["type"] == "error", messages
    envelope_ok(messages[-1], failed)
    assert messages[-1]["data"]["state"] == "FAILURE" and "parameters.fail=true" in messages[-1]["data"]["error"]

    running = submit(client, parameters={"duration_s": 60, "steps": 240})
    wait_status(client, running, {"PROCESSING"})
    with ws_open(stack, f"/api/ws/tasks/{running}", key) as ws:
        assert ws_recv(ws)["type"] == "progress"
        assert client.post(f"/api/tasks/{running}/cancel").status_code == 200
        rest, code = ws_rest(ws)
    assert code == 1000 and rest[-1]["type"] == "error"
    assert rest[-1]["data"]["state"] == "REVOKED" and rest[-1]["data"]["error"] == "Task was cancelled"


def test_websocket_of_a_comparison_counts_its_children(stack, client):
    key = key_of(client)
    task_id = seed_accepted(client.post("/api/visualizations/compare", json=comparison_body()))
    with ws_open(stack, f"/api/ws/tasks/{task_id}", key) as ws:
        messages, code = ws_rest(ws)
    assert code == 1000 and messages[-1]["type"] == "complete", messages
    counted = [m["data"]["progress"] for m in messages if "child jobs finished" in m["data"]["status"]]
    assert counted[-1:] == [99] and counted == sorted(counted), messages
    assert messages[-1]["data"]["result"]["variants"]["succeeded"] == 2


def test_openapi_documents_the_seed_paths(stack):
    doc = httpx.get(f"{stack.url}/openapi.json", timeout=30).json()
    paths = doc["paths"]
    for path in ("/api/visualizations", "/api/visualizations/compare", "/api/exports"):
        op = paths[path]["post"]
        assert "async_processing" in {p["name"] for p in op["parameters"]}
        assert {"200", "202", "400", "401"} <= set(op["responses"]) and op["security"] == [{"bearer": []}]
        assert op["requestBody"]["content"]["application/json"]["examples"]
    for path, method in (("/api/tasks/{task_id}/status", "get"), ("/api/tasks/{task_id}/cancel", "post"),
                         ("/api/tasks/{task_id}/result", "get")):
        assert paths[path][method]["security"] == [{"bearer": []}]
    status = doc["components"]["schemas"]["SeedStatus"]
    assert {"task_id", "state", "progress", "status"} <= set(status["properties"])
