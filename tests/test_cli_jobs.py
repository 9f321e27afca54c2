"""`aitasks submit|status|watch|result|cancel|jobs|types` as a user runs them, against a real deployment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as samples

from aitasks.service.redis_server import free_port

pytestmark = pytest.mark.slow  # a CLI process per step; model jobs


@pytest.fixture
def cli(stack):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITASKS_")}
    env.update({"AITASKS_URL": stack.url, "AITASKS_API_KEY": stack.new_key()})

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "aitasks.cli.main", *args], env={**env, **extra_env},
                              capture_output=True, text=True, timeout=180)

    return run


def picture(folder: Path, name: str, array: np.ndarray) -> Path:
    path = folder / name
    Image.fromarray(array).save(path)
    return path


def one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_submit_wait_saves_the_result(cli, tmp_path):
    photo = picture(tmp_path, "photo.png", np.asarray(Image.fromarray(samples.astronaut()).resize((128, 128))))
    r = cli("submit", "style_transfer", str(photo), "--param", "style=cartoon", "--wait", "-o", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["status"] == "SUCCESS" and doc["result"]["metadata"]["style"] == "cartoon"
    assert "image_data" not in doc["result"]  # files are saved, not printed
    with Image.open(tmp_path / "out" / "result.png") as out, Image.open(photo) as before:
        assert out.size == (128, 128)
        assert np.abs(np.asarray(out).astype(int) - np.asarray(before).astype(int)).mean() > 5
    assert "100%" in r.stderr  # the progress bar reached the end


def test_bare_paths_fill_the_types_file_inputs_in_order(cli, tmp_path):
    face = (samples.lfw_subset()[0] * 255).astype(np.uint8)
    source = picture(tmp_path, "face.png", np.asarray(Image.fromarray(face).resize((256, 256)).convert("RGB")))
    target = picture(tmp_path, "astronaut.png", samples.astronaut())
    r = cli("submit", "face_swap", str(source), f"target_image={target}", "--wait")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["result"]["metadata"]["faces_in_target"] == 1


def test_submit_then_status_watch_result(cli):
    r = cli("submit", "diagnostic", "-p", "steps=3", "-p", "duration_s=0.5")
    assert r.returncode == 0, r.stderr
    task_id = r.stdout.strip()
    assert len(task_id) == 36 and "\n" not in task_id  # only the id, for scripts
    watched = cli("watch", task_id)
    assert watched.returncode == 0, watched.stderr
    assert json.loads(watched.stdout)["result"]["parameters"]["steps"] == 3
    assert json.loads(cli("status", task_id).stdout)["status"] == "SUCCESS"
    assert json.loads(cli("result", task_id).stdout)["result"]["attempts"] == 1
    listed = cli("jobs", "--status", "SUCCESS")
    assert listed.returncode == 0 and task_id in listed.stdout
    types = cli("types")
    assert types.returncode == 0 and "background_removal" in types.stdout and "image_generation" in types.stdout


def test_exit_codes_and_one_line_errors(cli):
    failed = cli("submit", "diagnostic", "-p", "fail=true", "--wait")
    assert failed.returncode == 1 and "FAILURE" in one_line_error(failed)

    refused = cli("submit", "diagnostic", "-p", "steps=0")
    assert refused.returncode == 2 and "parameters.steps" in one_line_error(refused)
    unknown = cli("submit", "no_such_type")
    assert unknown.returncode == 2 and "diagnostic" in one_line_error(unknown)
    missing = cli("status", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 2 and "No task" in one_line_error(missing)
    bad_param = cli("submit", "diagnostic", "-p", "steps")
    assert bad_param.returncode == 2 and "name=value" in one_line_error(bad_param)

    nowhere = cli("types", AITASKS_URL=f"http://127.0.0.1:{free_port()}")
    assert nowhere.returncode == 3 and "cannot reach" in one_line_error(nowhere)
    wrong_key = cli("jobs", AITASKS_API_KEY="ait_wrong")
    assert wrong_key.returncode == 2 and "401" in one_line_error(wrong_key)

    task_id = cli("submit", "diagnostic", "-p", "duration_s=30", "-p", "steps=60").stdout.strip()
    timed_out = cli("watch", task_id, "--timeout", "1")
    assert timed_out.returncode == 4 and "still" in one_line_error(timed_out), timed_out.stderr
    cancelled = cli("cancel", task_id)
    assert cancelled.returncode == 0, cancelled.stderr
    ended = cli("watch", task_id)
    assert ended.returncode == 1 and "REVOKED" in one_line_error(ended)
