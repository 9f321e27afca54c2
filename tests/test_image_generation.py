"""``image_generation`` through the HTTP API with real workers, on a tiny random Stable Diffusion built
offline (tests/tiny_diffusion.py): its pictures are noise, but it loads and runs exactly as SD 1.5."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from stack import Stack, queue_held, running_stack, sse_events, submit, wait_status
from tiny_diffusion import build_tiny_pipeline

pytestmark = pytest.mark.slow  # torch and diffusers

SUBMIT = "/api/v1/tasks/submit/"
PROMPT = "a lighthouse on a cliff"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="module")
def gen_stack(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Stack]:
    """One deployment for the module with the tiny model configured (as conftest's session stack)."""
    with running_stack(tmp_path_factory.mktemp("genstack"), env={"AITASKS_IMAGE_MODEL_DIR": str(tiny_model)}) as s:
        yield s


@pytest.fixture
def gen_client(gen_stack: Stack) -> Iterator[httpx.Client]:
    with gen_stack.client() as c:
        yield c


def generate(stack: Stack, client: httpx.Client, prompt: str = PROMPT, **parameters: Any) -> dict[str, Any]:
    """Submit, wait, and return the result body (with ``image`` decoded from image_data)."""
    task_id = submit(client, "image_generation", prompt=prompt, parameters=parameters)
    status = wait_status(client, task_id, timeout_s=120)
    assert status["status"] == "SUCCESS", f"{status}\n{stack.logs()}"
    r = client.get(f"/api/v1/tasks/{task_id}/result/")
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()["result"]
    img = Image.open(io.BytesIO(base64.b64decode(result["image_data"])))
    assert img.format == "PNG"
    result["image"] = np.asarray(img.convert("RGB"))
    result["task_id"] = task_id
    return result


def error_of(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert body["code"] == code, body
    return body


# --- not configured --------------------------------------------------------------------------------


def test_without_a_model_folder_the_type_is_listed_unavailable_and_submit_answers_503(stack, client):
    types = {t["name"]: t for t in httpx.get(f"{stack.url}/api/v1/task-types", timeout=30).json()}
    info = types["image_generation"]
    assert info["available"] is False
    assert "AITASKS_IMAGE_MODEL_DIR" in info["unavailable_reason"] and "not set" in info["unavailable_reason"]
    assert info["queue"] == "gpu"
    assert info["options"]["styles"] == ["photo", "digital-art", "anime", "oil-painting", "watercolor"]

    r = client.post(SUBMIT, json={"task_type": "image_generation", "prompt": PROMPT})
    body = error_of(r, 503, "unavailable")
    assert "AITASKS_IMAGE_MODEL_DIR" in body["error"]


# --- configured: the tiny model ----------------------------------------------------------------------


def test_catalog_lists_it_available_with_its_styles(gen_stack):
    types = {t["name"]: t for t in httpx.get(f"{gen_stack.url}/api/v1/task-types", timeout=30).json()}
    info = types["image_generation"]
    assert info["available"] is True and info["unavailable_reason"] is None
    assert "watercolor" in info["options"]["styles"]
    assert info["limits"]["soft_time_limit_s"] == 900 and info["limits"]["time_limit_s"] == 960


def test_generates_a_png_of_the_requested_size_with_a_refined_prompt(gen_stack, gen_client, tiny_model):
    result = generate(gen_stack, gen_client, prompt="  a lighthouse\n on a cliff ", width=64, height=64,
                      steps=2, seed=7, style="watercolor")
    image = result["image"]
    assert image.shape == (64, 64, 3)
    assert image.std() > 1, "one flat colour"
    used = result["prompt_used"]
    assert used.startswith(PROMPT + ", ")
    for term in ("watercolor painting", "highly detailed", "sharp focus", "high quality"):
        assert term in used
    meta = result["metadata"]
    assert {k: meta[k] for k in ("width", "height", "steps", "seed", "guidance_scale")} == \
        {"width": 64, "height": 64, "steps": 2, "seed": 7, "guidance_scale": 7.5}
    assert meta["model"] == tiny_model.name
    assert meta["device"] == "cpu"
    assert "blurry" in meta["negative_prompt"]  # the default negative prompt
    assert meta["model_loads_in_process"] == {"diffusion_pipeline": 1}
    assert meta["timings_ms"]["total_ms"] > 0 and "denoise_ms" in meta["timings_ms"]
    assert [a["name"] for a in result["artifacts"]] == ["result.png"]


def test_the_same_seed_gives_the_same_pixels_and_another_seed_others(gen_stack, gen_client):
    first = generate(gen_stack, gen_client, width=64, height=64, steps=2, seed=7)["image"]
    again = generate(gen_stack, gen_client, width=64, height=64, steps=2, seed=7)["image"]
    other = generate(gen_stack, gen_client, width=64, height=64, steps=2, seed=8)["image"]
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 1


def test_the_model_loads_once_per_worker_process(gen_stack, gen_client):
    results = [generate(gen_stack, gen_client, width=64, height=64, steps=1, seed=s) for s in (1, 2)]
    assert [r["metadata"]["model_loads_in_process"]["diffusion_pipeline"] for r in results] == [1, 1]
    assert results[1]["metadata"]["model_loaded_by_this_job"] is False
    assert "model_load_ms" not in results[1]["metadata"]["timings_ms"]


def test_non_square_and_a_random_seed_that_is_reported(gen_stack, gen_client):
    result = generate(gen_stack, gen_client, width=96, height=64, steps=2, refine=False)
    assert result["image"].shape == (64, 96, 3)
    assert result["prompt_used"] == PROMPT  # refine off: the prompt as given, no negative prompt
    meta = result["metadata"]
    assert meta["negative_prompt"] is None
    assert isinstance(meta["seed"], int) and 0 <= meta["seed"] < 2**32


def test_progress_reports_the_denoising_steps(gen_stack, gen_client):
    steps = 60
    with queue_held(gen_client, "gpu") as release:  # held, so the stream sees the whole history
        task_id = submit(gen_client, "image_generation", prompt=PROMPT,
                         parameters={"width": 64, "height": 64, "steps": steps, "seed": 3})
        events = []
        for event in sse_events(gen_client, task_id, timeout_s=120):
            events.append(event)
            release()
    assert events[-1]["status"] == "SUCCESS", f"{events[-1]}\n{gen_stack.logs()}"
    messages = [e["message"] for e in events]
    step_messages = [m for m in messages if re.fullmatch(rf"denoising step \d+/{steps}", m)]
    assert len(set(step_messages)) >= 2, messages
    progress = [e["progress"] for e in events if e["status"] == "PROCESSING"]
    assert progress == sorted(progress), progress
    step_progress = [e["progress"] for e in events if e["message"] in step_messages]
    assert all(10 <= p <= 95 for p in step_progress), step_progress


def test_a_cancel_stops_it_between_denoising_steps(gen_stack, gen_client):
    task_id = submit(gen_client, "image_generation", prompt=PROMPT,
                     parameters={"width": 64, "height": 64, "steps": 150, "seed": 3})
    seen = None
    for event in sse_events(gen_client, task_id, timeout_s=120):
        if event["message"].startswith("denoising step"):
            seen = event
            r = gen_client.post(f"/api/v1/tasks/{task_id}/cancel/")
            assert r.status_code == 200, r.text
            break
    assert seen is not None, "no denoising step reported"
    final = wait_status(gen_client, task_id, timeout_s=60)
    assert final["status"] == "REVOKED", final
    assert final["progress"] < 95


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"prompt": PROMPT, "parameters": {"width": 100}}, "parameters.width", ("multiple of 8", "64", "1024")),
    ({"prompt": PROMPT, "parameters": {"height": 2048}}, "parameters.height", ("multiple of 8", "1024")),
    ({"parameters": {"width": 64}}, "prompt", ("required",)),
    ({"prompt": "   "}, "prompt", ("blank",)),
    ({"prompt": PROMPT, "parameters": {"steps": 0}}, "parameters.steps", ("greater than or equal to 1",)),
    ({"prompt": PROMPT, "parameters": {"style": "cubist"}}, "parameters.style", ("watercolor",)),
    ({"prompt": PROMPT, "parameters": {"seed": -1}}, "parameters.seed", ("greater than or equal to 0",)),
], ids=["width-not-multiple-of-8", "height-too-large", "missing-prompt", "blank-prompt", "zero-steps",
        "unknown-style", "negative-seed"])
def test_bad_input_is_refused_naming_the_field(gen_client, body, field, words):
    r = gen_client.post(SUBMIT, json={"task_type": "image_generation", **body})
    err = error_of(r, 400, "validation_error")
    assert field in err["error"], err
    fields = {f["field"]: f["message"] for f in err["fields"]}
    assert field in fields, err
    for word in words:
        assert word in fields[field] + " " + err["error"], (word, err)


# --- preload -------------------------------------------------------------------------------------------


def test_preloaded_model_is_ready_for_the_first_job(make_stack, tiny_model):
    s = make_stack(env={"AITASKS_IMAGE_MODEL_DIR": str(tiny_model), "AITASKS_PRELOAD": "image_generation"})
    with s.client() as c:
        result = generate(s, c, width=64, height=64, steps=1, seed=1)
    meta = result["metadata"]
    assert meta["model_loads_in_process"] == {"diffusion_pipeline": 1}
    assert meta["model_loaded_by_this_job"] is False
    assert "model_load_ms" not in meta["timings_ms"] and "model_cached_ms" in meta["timings_ms"]
    assert "models preloaded" in s.workers["worker-gpu"].log_path.read_text()
