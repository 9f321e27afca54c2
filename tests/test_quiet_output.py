"""What the API and the workers print is the service's own JSON log, one object a line: no Celery banner,
shutdown prints or pending-deprecation warnings, no native mediapipe/TFLite lines when a model loads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pictures import astronaut, b64, png
from stack import Stack, submit, wait_status

pytestmark = pytest.mark.slow  # loads mediapipe's models

NOISE = {
    "TFLite's delegate notice": re.compile(r"Created TensorFlow Lite XNNPACK delegate"),
    "absl's pre-init lines": re.compile(r"inference_feedback_manager|absl::InitializeLog"),
    "Celery's pending deprecation": re.compile(r"CPendingDeprecationWarning"),
    "Celery's banner": re.compile(r"\[tasks\]|-{6,} \[queues\]|\.> transport:"),
    "Celery's shutdown print": re.compile(r"^worker: Warm shutdown", re.M),
}


def test_api_and_workers_print_only_their_json_log(tmp_path: Path) -> None:
    stack = Stack(tmp_path / "stack")
    try:
        stack.start()
        with stack.client() as client:
            # A person: mediapipe's face detector and selfie segmenter load in the cpu worker's pool process.
            task_id = submit(client, "background_removal", image=b64(png(astronaut())))
            assert wait_status(client, task_id, timeout_s=180)["status"] == "SUCCESS"
            # The broker goes away and comes back: Celery warned on every connection loss.
            stack.redis_server.stop()
            stack.redis_server.start()
            task_id = submit(client, "diagnostic", parameters={"steps": 1})
            assert wait_status(client, task_id, timeout_s=90)["status"] == "SUCCESS"
    finally:
        stack.stop()  # the warm shutdown's lines too

    for proc in stack.processes():
        text = proc.log_path.read_text(errors="replace")
        found = [what for what, pattern in NOISE.items() if pattern.search(text)]
        assert not found, f"{proc.name} printed {found}:\n{text}"
        lines = text.splitlines()
        assert lines, f"{proc.name} printed nothing"
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                raise AssertionError(f"{proc.name} printed a line that is not a JSON log line: {line!r}\n{text}")
            assert isinstance(entry, dict) and {"ts", "level", "logger", "msg"} <= entry.keys(), line
            assert entry.get("process") == proc.name, line  # threads' lines carry it too
