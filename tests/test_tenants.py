"""Tenants are kept apart on every endpoint, and API keys made with the CLI work and stop working at once.

Another tenant's job answers exactly like a job that does not exist (404), so ids leak nothing.
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image

from stack import Stack, key_of, submit, wait_status, ws_paths, ws_refused

TASKS = "/api/v1/tasks"


def png(width: int = 24, height: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aitasks.cli.main", *args], env=stack.env(),
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def two_tenants(stack: Stack):  # type: ignore[no-untyped-def]
    with stack.client(tenant="alice-" + str(time.time_ns())) as alice, \
            stack.client(tenant="bob-" + str(time.time_ns())) as bob:
        yield alice, bob


def test_another_tenants_job_is_404_on_every_endpoint(stack, two_tenants):
    alice, bob = two_tenants
    done = submit(alice, image=base64.b64encode(png()).decode(), parameters={"steps": 1})
    assert wait_status(alice, done)["status"] == "SUCCESS"
    running = submit(alice, parameters={"duration_s": 30, "steps": 30})
    assert wait_status(alice, running, {"PROCESSING", "SUCCESS"})["status"] == "PROCESSING"

    for task_id in (done, running):
        for method, path in [("GET", f"{TASKS}/{task_id}/status/"), ("GET", f"{TASKS}/{task_id}/result/"),
                             ("POST", f"{TASKS}/{task_id}/cancel/"), ("GET", f"{TASKS}/{task_id}/events"),
                             ("GET", f"{TASKS}/{task_id}/artifacts/thumbnail.png"),
                             ("GET", f"{TASKS}/{task_id}/artifacts/input-image.png")]:
            r = bob.request(method, path)
            assert r.status_code == 404, (method, path, r.status_code, r.text)
            assert r.json()["code"] == "not_found", r.text
        for path in ws_paths(task_id):
            assert ws_refused(stack, path, key_of(bob))[1] == 4404

    # Bob's cancel did nothing; bob's list is empty and filters cannot reach alice's jobs.
    assert alice.get(f"{TASKS}/{running}/status/").json()["status"] == "PROCESSING"
    for query in ("", "?status=SUCCESS", "?task_type=diagnostic", "?status=PROCESSING"):
        assert bob.get(f"{TASKS}/{query}").json()["tasks"] == []
    assert {t["task_id"] for t in alice.get(f"{TASKS}/").json()["tasks"]} == {done, running}
    # The owner still reaches everything.
    assert alice.get(f"{TASKS}/{done}/artifacts/thumbnail.png").status_code == 200
    assert alice.post(f"{TASKS}/{running}/cancel/").status_code == 200


def test_idempotency_keys_are_per_tenant(two_tenants):
    alice, bob = two_tenants
    headers = {"Idempotency-Key": "same-key-" + str(time.time_ns())}
    a = alice.post(f"{TASKS}/submit/", json={"task_type": "diagnostic"}, headers=headers).json()["task_id"]
    b = bob.post(f"{TASKS}/submit/", json={"task_type": "diagnostic"}, headers=headers).json()["task_id"]
    assert a != b
    assert alice.post(f"{TASKS}/submit/", json={"task_type": "diagnostic"}, headers=headers).json()["task_id"] == a


@pytest.mark.slow  # CLI processes
def test_keys_made_with_the_cli_work_and_revoking_stops_them_at_once(stack):
    tenant = "cli-" + str(time.time_ns())
    made = cli(stack, "keys", "create", "--tenant", tenant, "--name", "ci")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key and "\n" not in key  # only the key, so scripts can capture it

    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        task_id = submit(c)
        assert wait_status(c, task_id)["status"] == "SUCCESS"
        listed = cli(stack, "keys", "list")
        assert listed.returncode == 0 and tenant in listed.stdout and key not in listed.stdout, listed.stdout

        revoked = cli(stack, "keys", "revoke", key)
        assert revoked.returncode == 0, revoked.stderr
        # Immediately, on every endpoint, including the API's auth cache.
        for method, path in [("GET", f"{TASKS}/"), ("GET", f"{TASKS}/{task_id}/status/"),
                             ("POST", f"{TASKS}/submit/")]:
            r = c.request(method, path, json={"task_type": "diagnostic"} if method == "POST" else None)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["code"] == "unauthorized"
        for path in ws_paths(task_id):
            assert ws_refused(stack, path, key)[1] == 4401
    assert cli(stack, "keys", "revoke", key).returncode != 0  # a second revoke says it is unknown


def test_missing_malformed_and_unknown_keys_are_401_json(stack):
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Basic abc"},
                    {"Authorization": "Bearer ak_not-a-real-key"}):
        with httpx.Client(base_url=stack.url, headers=headers, timeout=30) as c:
            for method, path in [("GET", f"{TASKS}/"), ("POST", f"{TASKS}/submit/"),
                                 ("GET", f"{TASKS}/x/status/")]:
                r = c.request(method, path, content=json.dumps({"task_type": "diagnostic"}))
                assert r.status_code == 401, (headers, path, r.text)
                assert r.headers.get("www-authenticate", "").lower().startswith("bearer")
                assert r.json()["code"] == "unauthorized"
