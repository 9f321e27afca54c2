"""docs/security.md, item 13: keys have scopes and may expire; `aitasks run` mints a key only for a tenant
without one; revoking a key ends the streams it opened."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from aitasks.api.app import create_app
from aitasks.api.deps import READ_POSTS
from aitasks.client import sse
from aitasks.jobs.apikeys import create_key, first_key, parse_duration, revoke_key
from aitasks.service.supervisor import key_banner
from aitasks.settings import Settings
from openapi_check import OpenApiCheck
from stack import Stack, submit, wait_status, ws_open, ws_recv, ws_rest

TASKS = "/api/v1/tasks"


def tenant() -> str:
    return f"k-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def diagnostic_off(stack: Stack, tmp_path: Path) -> Iterator[TestClient]:
    """The API as a deployment runs it (AITASKS_ENABLE_DIAGNOSTIC off), on the stack's Redis; every answer
    checked against its OpenAPI document."""
    settings = Settings(redis_url=stack.redis_server.url, data_dir=tmp_path, public_url="http://testserver",
                        enable_diagnostic=False)
    app = create_app(settings)
    with TestClient(app) as c:
        c.event_hooks = {"request": [], "response": [OpenApiCheck(app.openapi()).hook()]}
        yield c


def test_a_read_key_reads_but_every_write_is_403_naming_its_scope(stack: Stack) -> None:
    name = tenant()
    with stack.client(tenant=name) as writer, stack.client(key=create_key(stack.redis, name, scope="read")) as reader:
        done = submit(writer, parameters={"steps": 1})
        wait_status(writer, done)
        # Reads: status, result, the list, the catalog, a stream token and the stream itself.
        for path in (f"{TASKS}/{done}/status/", f"{TASKS}/{done}/result/", f"{TASKS}/", "/api/v1/task-types",
                     "/v1/predictions"):
            assert reader.get(path).status_code == 200, path
        assert reader.post("/api/v1/stream-tokens").status_code == 201
        with reader.stream("GET", f"{TASKS}/{done}/events") as r:
            assert r.status_code == 200 and [u["status"] for u in sse.updates(r.iter_lines())] == ["SUCCESS"]
        # Writes: 403, saying the scope, and nothing done.
        writes = [("POST", f"{TASKS}/submit/", {"task_type": "diagnostic"}),
                  ("POST", f"{TASKS}/{done}/cancel/", None), ("POST", "/api/exports", {}),
                  ("POST", "/v1/predictions", {"version": "aitasks/diagnostic", "input": {}}),
                  ("DELETE", "/api/v1/documents/nope", None)]
        for method, path, body in writes:
            r = reader.request(method, path, json=body)
            assert r.status_code == 403, (path, r.text)
            assert "'read'" in r.text, r.text
        assert [t["task_id"] for t in reader.get(f"{TASKS}/").json()["tasks"]] == [done]


def test_every_write_operation_declares_403(stack: Stack) -> None:
    schema = httpx.get(f"{stack.url}/openapi.json").json()
    writes = [(m, p) for p, ops in schema["paths"].items() for m, op in ops.items()
              if m not in ("get", "head") and op.get("security") and p not in READ_POSTS]
    assert writes
    missing = [(m, p) for m, p in writes if "403" not in schema["paths"][p][m]["responses"]]
    assert not missing, missing


def test_an_expired_key_is_401_saying_it_expired(stack: Stack) -> None:
    key = create_key(stack.redis, tenant(), expires_in_s=1.0)
    with stack.client(key=key) as c:
        assert c.get(f"{TASKS}/").status_code == 200  # now in the API's auth cache
        time.sleep(1.1)
        r = c.get(f"{TASKS}/")
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        assert "expired" in r.json()["error"]
        assert c.post("/api/v1/stream-tokens").status_code == 401


def test_an_admin_key_runs_diagnostic_where_the_deployment_keeps_it_off(stack: Stack,
                                                                         diagnostic_off: TestClient) -> None:
    name = tenant()
    admin = {"Authorization": f"Bearer {create_key(stack.redis, name, scope='admin')}"}
    writer = {"Authorization": f"Bearer {create_key(stack.redis, name)}"}
    body = {"task_type": "diagnostic"}
    assert diagnostic_off.post(f"{TASKS}/submit/", json=body, headers=writer).status_code == 403
    r = diagnostic_off.post(f"{TASKS}/submit/", json=body, headers=admin)
    assert r.status_code == 202, r.text
    r = diagnostic_off.post("/v1/models/aitasks/diagnostic/predictions", json={"input": {}}, headers=admin)
    assert r.status_code == 201, r.text
    # admin includes write: the ordinary things work too.
    assert diagnostic_off.post(f"{TASKS}/submit/", json={"task_type": "export", "data": {"a": 1}},
                               headers=admin).status_code in (202, 400)


def test_run_mints_a_key_only_for_a_tenant_without_one(stack: Stack) -> None:
    name = tenant()
    key = first_key(stack.redis, name, "make run")
    assert key is not None and key_banner(name, key) == [f"API key (tenant '{name}'): {key}"]
    assert first_key(stack.redis, name, "make run") is None  # the second start mints nothing
    said = "\n".join(key_banner(name, None))
    assert "cannot be shown again" in said and f"keys create --tenant {name}" in said
    # A tenant whose only key expired gets a new one.
    other = tenant()
    create_key(stack.redis, other, expires_in_s=0.01)
    time.sleep(0.05)
    assert first_key(stack.redis, other, "make run") is not None


def test_durations() -> None:
    assert parse_duration("30d") == 30 * 86400 and parse_duration("12h") == 43200 and parse_duration("90m") == 5400
    for bad in ("", "0d", "12", "1y", "-1h"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def _long_job(client: httpx.Client) -> str:
    task_id = submit(client, parameters={"duration_s": 60, "steps": 2})
    assert wait_status(client, task_id, {"PROCESSING"})["status"] == "PROCESSING"
    return task_id


def _sse_ends_after_revoke(stack: Stack, task_id: str, key: str, **request: object) -> float:
    """Open the stream, read its first state, revoke ``key``; seconds until the stream ended."""
    with httpx.stream("GET", f"{stack.url}{TASKS}/{task_id}/events", timeout=60, **request) as r:  # type: ignore[arg-type]
        assert r.status_code == 200
        lines = r.iter_lines()
        assert next(line for line in lines if line.startswith("data:"))
        revoke_key(stack.redis, key)
        revoked_at = time.monotonic()
        rest = list(lines)
    assert not any(line.startswith("event: end") for line in rest), rest
    return time.monotonic() - revoked_at


def test_revoking_a_key_ends_its_open_streams(stack: Stack) -> None:
    name = tenant()
    with stack.client(tenant=name) as owner:
        task_id = _long_job(owner)
        try:
            key = create_key(stack.redis, name)
            assert _sse_ends_after_revoke(stack, task_id, key, headers={"Authorization": f"Bearer {key}"}) < 3
            key = create_key(stack.redis, name)  # through a stream token bound to the key
            token = httpx.post(f"{stack.url}/api/v1/stream-tokens",
                               headers={"Authorization": f"Bearer {key}"}).json()["token"]
            assert _sse_ends_after_revoke(stack, task_id, key, params={"token": token}) < 3
            key = create_key(stack.redis, name)
            with ws_open(stack, f"{TASKS}/{task_id}/ws", key) as ws:
                assert ws_recv(ws)["status"] == "PROCESSING"
                revoke_key(stack.redis, key)
                messages, code = ws_rest(ws, 3)
            assert code == 4401 and messages[-1]["code"] == "unauthorized", messages
            # Another key's stream of the same job is untouched.
            assert wait_status(owner, task_id, {"PROCESSING"})["status"] == "PROCESSING"
        finally:
            owner.post(f"{TASKS}/{task_id}/cancel/")


@pytest.mark.slow  # CLI processes
def test_keys_create_takes_a_scope_and_an_expiry_and_list_shows_them(stack: Stack) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "aitasks.cli.main", "keys", *args], env=stack.env(),
                              capture_output=True, text=True, timeout=60)

    name = tenant()
    made = cli("create", "--tenant", name, "--scope", "read", "--expires-in", "12h")
    assert made.returncode == 0, made.stderr
    with stack.client(key=made.stdout.strip()) as c:
        assert c.get(f"{TASKS}/").status_code == 200
        assert c.post(f"{TASKS}/submit/", json={"task_type": "diagnostic"}).status_code == 403
    row = next(line for line in cli("list").stdout.splitlines() if name in line)
    # ID TENANT SCOPE CREATED LAST-USED EXPIRES NAME: an expiry (not "never") ends the row, the name being empty
    assert " read " in row and re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\s*$", row), row
    assert cli("create", "--tenant", name, "--scope", "root").returncode == 2
    assert cli("create", "--tenant", name, "--expires-in", "soon").returncode == 2
