"""Schemathesis against the live OpenAPI document of a real deployment (issue 19, "fuzzing in CI").

Every operation the API publishes is fuzzed with a bounded, deterministic set of cases (the examples,
coverage and fuzzing phases; derandomized generation, so no example database and the same cases every
run) by the ``schemathesis`` CLI, authenticated with a real API key, against a private stack (Redis,
workers, API). Schemathesis's checks run: no 5xx, every answer documented (status code, content type,
body schema, headers, ``Allow`` of a 405), every schema-violating request refused, every schema-valid one
accepted. Ours are loaded into the CLI from this file (``SCHEMATHESIS_HOOKS``):

- ``seed_error_shape``: every 4xx the fuzzer provokes answers the seeds' error body (api/errors.py
  ``error_body``): ``{"error": <sentence>, "code": <code>, "fields": [{"field", "message"}]?}``;
- ``only_failed_job_500``: the one 5xx allowed is a failed job's ``/result/`` (seed 001 answers it with
  the job's ``FAILURE`` body);
- ``schema_valid_accepted``: schemathesis's ``positive_data_acceptance``, except for the refusals no schema
  can foresee (``CONTENT_FIELDS``): a file that is not a readable image or document, a cursor this API
  did not give, a webhook host that does not resolve to a public address, a job type's own ``parameters``
  (each type's input schema is in ``GET /api/v1/task-types``); and the seeds' answers about a job's state
  (a cancelled job's result is ``410``, cancelling a finished one ``400 invalid_state``).

Not checked: response times (``max_response_time``), which are the benchmarks' business. A failure names
the operation, the check and the case as a curl command (schemathesis's report, in the assertion).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from schemathesis.core.failures import Failure
from schemathesis.specs.openapi.checks import positive_data_acceptance

# Cases per operation and phase: 42 operations fit in about three minutes on a loaded 2-core machine.
MAX_EXAMPLES = 25
RESULT_PATH = re.compile(r"^/api(/v1)?/tasks/[^/]+/result/?$")
CANCEL_PATH = re.compile(r"^/api(/v1)?/tasks/[^/]+/cancel/?$")
# Inputs whose validity no JSON Schema can state: what the server makes of them is the contract.
# (DOTALL: a generated key inside `parameters` may hold a line break, and is still the type's own field.)
CONTENT_FIELDS = re.compile(r"^(image|source_image|target_image|mask|style_image|file(\[\d+\])?|content|cursor"
                            r"|webhook|parameters([.\[].*)?|prompt|input([.\[].*)?)$", re.DOTALL)
CLI = Path(sys.executable).with_name("schemathesis")
# schemathesis's `all` less positive_data_acceptance (ours wraps it) and max_response_time (no timing here).
CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance", "response_headers_conformance",
          "response_schema_conformance", "negative_data_rejection", "missing_required_header", "unsupported_method",
          "allow_header_conformance", "use_after_free", "ensure_resource_availability", "ignored_auth",
          "object_level_authorization", "seed_error_shape", "only_failed_job_500", "schema_valid_accepted"]


def _json(response: Any) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _named_fields(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return []
    entries = body.get("fields") or body.get("invalid_fields") or []
    return [e.get("field", "") for e in entries if isinstance(e, dict)]


@schemathesis.check
def seed_error_shape(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 4xx answers the seeds' error body: ``error`` (the sentence) and ``code``, strings; ``fields``,
    when present, a list of ``{"field", "message"}``. Replicate's /v1/ adds its problem keys beside."""
    if not 400 <= response.status_code < 500:
        return None
    body = _json(response)
    if response.status_code == 410 and RESULT_PATH.match(case.formatted_path):
        return None  # a cancelled job's result: the seed's result body, not an error body
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), f"a {response.status_code} that is not JSON: {content_type!r}"
    assert isinstance(body, dict), f"a {response.status_code} body that is not an object: {body!r}"
    assert isinstance(body.get("error"), str) and body["error"].strip(), f"no `error` sentence: {body!r}"
    assert isinstance(body.get("code"), str) and body["code"], f"no `code`: {body!r}"
    fields = body.get("fields")
    if fields is not None:
        assert isinstance(fields, list) and fields, f"`fields` is not a non-empty list: {body!r}"
        for f in fields:
            assert isinstance(f, dict) and isinstance(f.get("field"), str) and isinstance(f.get("message"), str), \
                f"a `fields` entry that is not {{field, message}}: {body!r}"
    if body["code"] == "validation_error":
        assert _named_fields(body), f"a validation error that names no field: {body!r}"
    return None


@schemathesis.check
def only_failed_job_500(ctx: Any, response: Any, case: Any) -> bool | None:
    """The documented 500 of a failed job's result, and no other 5xx anywhere."""
    if response.status_code < 500:
        return None
    path = case.formatted_path
    assert response.status_code == 500 and RESULT_PATH.match(path), \
        f"{response.status_code} from {case.method} {path}: {response.text[:500]}"
    body = _json(response) or {}
    assert body.get("status") == "FAILURE", f"a 500 from a result that is not a failed job's: {body!r}"
    return None


def foreseeable(response: Any, case: Any) -> bool:
    """Whether a refusal of a schema-valid request is one the schema could have foreseen (a failure)."""
    body = _json(response)
    path = case.formatted_path
    if response.status_code == 410 and RESULT_PATH.match(path):
        return False  # the result of a job that was cancelled (seed 001)
    if response.status_code == 400 and CANCEL_PATH.match(path) and isinstance(body, dict) \
            and body.get("code") == "invalid_state":
        return False  # cancelling a job that already ended (seed 001)
    named = _named_fields(body)
    return not (response.status_code in (400, 413, 415, 422) and named
                and all(CONTENT_FIELDS.match(name) for name in named))


@schemathesis.check
def schema_valid_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """schemathesis's ``positive_data_acceptance``, less the refusals ``foreseeable`` clears."""
    try:
        positive_data_acceptance(ctx, response, case)
    except Failure:
        if foreseeable(response, case):
            raise
    return None


def _config(path: Path) -> Path:
    """schemathesis.toml: the result operations may answer their documented 500 (checked above)."""
    path.write_text(
        '[[operations]]\n'
        'include-path-regex = "/result/?$"\n'
        'checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "500"]\n')
    return path


def _deployment(tmp_path: Path) -> dict[str, str]:
    """Every job type available (image_generation on the tests' tiny model), and the fuzzer's jobs bounded:
    a few seconds each, no retries, so the workers' backlog stays small while the fuzzer runs."""
    import json

    from aitasks.processors.registry import load_all
    from tiny_diffusion import build_tiny_pipeline

    bounded = {"soft_time_limit_s": 3, "time_limit_s": 5, "max_retries": 0}
    return {"AITASKS_SYNC_WAIT_S": "1", "AITASKS_MAX_WAIT_S": "2",
            "AITASKS_IMAGE_MODEL_DIR": str(build_tiny_pipeline(tmp_path / "tiny-sd")),
            "AITASKS_TYPE_OVERRIDES": json.dumps({name: bounded for name in load_all().names()})}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_schemathesis_finds_nothing(make_stack: Any, tmp_path: Path) -> None:
    # Waiting submits are bounded too: a fuzzed `?async_processing=false` costs a second, not thirty.
    stack = make_stack(env=_deployment(tmp_path))
    key = stack.new_key("fuzz")
    cmd = [str(CLI), "--config-file", str(_config(tmp_path / "schemathesis.toml")), "run",
           f"{stack.url}/openapi.json", "--checks", ",".join(CHECKS),
           "--phases", "examples,coverage,fuzzing", "--max-examples", str(MAX_EXAMPLES),
           "--generation-deterministic", "--workers", "1", "--request-timeout", "20",
           "--header", f"Authorization: Bearer {key}", "--no-color", "--continue-on-failure"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": __file__,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    started = time.monotonic()
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=540, env=env, cwd=tmp_path)
    took = time.monotonic() - started
    output = run.stdout + run.stderr
    print(f"schemathesis ran for {took:.0f} s\n{output[-2500:]}")
    assert run.returncode == 0, f"schemathesis found failures ({took:.0f} s):\n{output}"
    tested = re.search(r"Tested: (\d+)", output)
    assert tested and int(tested.group(1)) >= 40, output[-2500:]  # every operation, not a schema that failed to load
