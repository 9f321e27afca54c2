"""Security review items 6, 9, 11 and 12 (docs/security.md): cheap probes, the diagnostic type kept off
by default, security headers on every dashboard path and on artifacts, Flower never open beyond loopback.

Most run against the shared deployment; the settings it does not have (a metrics token, diagnostic off, a
Redis that is down) run the real API application in this process on the deployment's Redis."""

from __future__ import annotations

import base64
import io
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from starlette.testclient import TestClient

from aitasks.api.app import create_app
from aitasks.errors import ConfigurationError
from aitasks.jobs import keys
from aitasks.service import flower
from aitasks.service.redis_server import free_port
from aitasks.settings import Settings
from openapi_check import OpenApiCheck
from stack import Stack, poll

PROBES = ("/readyz", "/metrics", "/api/v1/system")


def scans(stack: Stack) -> int:
    return int(stack.redis.info("commandstats").get("cmdstat_scan", {}).get("calls", 0))


@pytest.fixture
def app_client(stack: Stack, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[TestClient]:
    """The API application with the settings of ``request.param`` (a dict), on the deployment's Redis;
    every answer is checked against its OpenAPI document, as Stack.client() checks."""
    # public_url: Starlette's test client gives `server` as a list, which api/views.base_url's cache cannot key.
    settings = Settings(**{"redis_url": stack.redis_server.url, "data_dir": tmp_path,
                           "public_url": "http://testserver", **request.param})
    app = create_app(settings)
    with TestClient(app) as c:
        c.event_hooks = {"request": [], "response": [OpenApiCheck(app.openapi()).hook()]}
        yield c


# --- 6. cheap probes ---------------------------------------------------------------------------------

def test_probes_read_the_workers_without_scanning_the_keyspace(stack: Stack) -> None:
    with stack.client() as c:
        before = scans(stack)
        for _ in range(20):
            for path in PROBES:
                assert c.get(path).status_code == 200, path
        assert scans(stack) - before == 0
        ready = c.get("/readyz").json()
        assert ready["workers"]["cpu"] >= 1 and ready["workers"]["gpu"] >= 1
        assert 'aitasks_workers{queue="cpu"} ' in c.get("/metrics").text
        assert c.get("/api/v1/system").json()["workers"]


def test_a_name_without_a_heartbeat_is_no_worker_and_old_names_are_forgotten(stack: Stack) -> None:
    r = stack.redis
    r.zadd(keys.WORKERS, {"ghost@nowhere": time.time() + 1000})  # listed, but its heartbeat key is gone
    try:
        with stack.client() as c:
            names = [w["name"] for w in c.get("/api/v1/system").json()["workers"]]
            assert names and "ghost@nowhere" not in names
        r.zadd(keys.WORKERS, {"ghost@nowhere": time.time() - 1000})  # expired long ago: the beat drops it
        poll(lambda: r.zscore(keys.WORKERS, "ghost@nowhere") is None, "a heartbeat to forget the ghost", 10)
    finally:
        r.zrem(keys.WORKERS, "ghost@nowhere")


@pytest.mark.parametrize("app_client", [{"redis_url": f"redis://127.0.0.1:{free_port()}/0"}], indirect=True)
def test_readyz_with_redis_down_names_no_internals(app_client: TestClient) -> None:
    r = app_client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["redis"] == "unreachable"
    text = r.text.lower()
    assert "error" not in text and "refused" not in text and "127.0.0.1" not in text and "connect" not in text


@pytest.mark.parametrize("app_client", [{"metrics_token": "scrape-secret"}], indirect=True)
def test_metrics_needs_its_token_when_one_is_set(app_client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-secret"}):
        r = app_client.get("/metrics", headers=headers)
        assert r.status_code == 401, headers
        assert r.json()["code"] == "unauthorized" and "AITASKS_METRICS_TOKEN" in r.json()["error"]
        assert r.headers["www-authenticate"] == "Bearer"
    ok = app_client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert ok.status_code == 200 and "aitasks_jobs_submitted_total" in ok.text


def test_metrics_is_open_without_a_token(stack: Stack) -> None:
    with stack.client() as c:
        assert c.get("/metrics", headers={"Authorization": ""}).status_code == 200


# --- 9. the diagnostic type --------------------------------------------------------------------------

@pytest.mark.parametrize("app_client", [{"enable_diagnostic": False}], indirect=True)
def test_diagnostic_is_refused_unless_the_deployment_enables_it(stack: Stack, app_client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {stack.new_key()}"}
    r = app_client.post("/api/v1/tasks/submit/", json={"task_type": "diagnostic"}, headers=auth)
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["code"] == "forbidden" and "AITASKS_ENABLE_DIAGNOSTIC" in body["error"]
    assert body["fields"][0]["field"] == "task_type" and "AITASKS_ENABLE_DIAGNOSTIC" in body["fields"][0]["message"]
    # The Replicate-compatible path too, with its problem body.
    r = app_client.post("/v1/models/aitasks/diagnostic/predictions", json={"input": {}}, headers=auth)
    assert r.status_code == 403 and "AITASKS_ENABLE_DIAGNOSTIC" in r.json()["detail"]
    # The catalog says so; the other types are unaffected.
    types = {t["name"]: t for t in app_client.get("/api/v1/task-types", headers=auth).json()}
    assert types["diagnostic"]["available"] is False
    assert "AITASKS_ENABLE_DIAGNOSTIC" in types["diagnostic"]["unavailable_reason"]
    assert types["export"]["available"] is True


def test_diagnostic_runs_where_the_deployment_enables_it(stack: Stack) -> None:
    with stack.client() as c:  # tests/stack.py sets AITASKS_ENABLE_DIAGNOSTIC=true
        types = {t["name"]: t for t in c.get("/api/v1/task-types").json()}
        assert types["diagnostic"]["available"] is True
        assert c.post("/api/v1/tasks/submit/", json={"task_type": "diagnostic"}).status_code == 202


# --- 11. headers everywhere --------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/", "/ui/index.html", "/ui/app.css", "/ui/js/main.js", "/ui/no-such-file"])
def test_every_dashboard_path_carries_the_security_headers(stack: Stack, path: str) -> None:
    with stack.client() as c:
        r = c.get(path)
    assert r.status_code == (404 if "no-such" in path else 200)
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"


def test_an_artifact_is_a_download_never_a_page(stack: Stack) -> None:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(out, "PNG")
    with stack.client() as c:
        r = c.post("/api/v1/tasks/submit/", json={"task_type": "diagnostic",
                                                   "image": base64.b64encode(out.getvalue()).decode()})
        assert r.status_code == 202, r.text
        got = c.get(f"/api/v1/tasks/{r.json()['task_id']}/artifacts/input-image.png")
    assert got.status_code == 200 and got.content == out.getvalue()
    assert got.headers["content-type"] == "image/png"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert got.headers["content-disposition"].startswith("attachment;")
    assert "sandbox" in got.headers["content-security-policy"]


def test_a_download_read_whole_or_in_chunks_answers_alike_and_serves_ranges(stack: Stack) -> None:
    """A file up to 1 MiB is read whole in one step, a larger one (or a range request) goes through
    Starlette's FileResponse (api/artifact_download.py): the same bytes and headers either way, ETag and
    Last-Modified included, and a range gets its 206."""
    small, large = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (64, 64), "blue").save(small, "PNG")
    Image.frombytes("RGB", (700, 700), random.Random(7).randbytes(700 * 700 * 3)).save(large, "PNG")
    assert len(small.getvalue()) < 1 << 20 < len(large.getvalue())
    with stack.client() as c:
        for picture in (small.getvalue(), large.getvalue()):
            r = c.post("/api/v1/tasks/submit/", data={"task_type": "diagnostic"},
                       files={"image": ("p.png", picture, "image/png")})
            assert r.status_code == 202, r.text
            url = f"/api/v1/tasks/{r.json()['task_id']}/artifacts/input-image.png"
            got = c.get(url)
            assert got.status_code == 200 and got.content == picture
            assert got.headers["content-length"] == str(len(picture))
            assert got.headers["accept-ranges"] == "bytes" and got.headers["etag"].startswith('"')
            assert got.headers["last-modified"].endswith(" GMT")
            assert got.headers["content-disposition"] == 'attachment; filename="input-image.png"'
            assert got.headers["x-content-type-options"] == "nosniff"
            part = c.get(url, headers={"Range": "bytes=10-99"})
            assert part.status_code == 206 and part.content == picture[10:100]
            assert part.headers["etag"] == got.headers["etag"]


# --- 12. Flower --------------------------------------------------------------------------------------

def test_flower_beyond_loopback_needs_a_password() -> None:
    for host in ("0.0.0.0", "10.1.2.3", "aitasks.example"):
        with pytest.raises(ConfigurationError, match="AITASKS_FLOWER_BASIC_AUTH"):
            flower.flower_command("py", "redis://r", host, 5555, None)
    for bad in ("", "user", "user:", ":pw", "a:b,c"):
        with pytest.raises(ConfigurationError, match="user:password"):
            flower.flower_command("py", "redis://r", "0.0.0.0", 5555, bad)
    local = flower.flower_command("py", "redis://:pw@r", "127.0.0.1", 5555, None)
    assert local.argv == ["py", "-m", "celery", "flower", "--port=5555", "--address=127.0.0.1"]
    assert local.env == {"CELERY_BROKER_URL": "redis://:pw@r"}  # the broker's password stays out of `ps`
    guarded = flower.flower_command("py", "redis://r", "0.0.0.0", 5555, "ops:s3cret,bob:pw")
    assert "--address=0.0.0.0" in guarded.argv
    # Flower's --basic_auth, given in its environment: out of `ps` too.
    assert guarded.env == {"CELERY_BROKER_URL": "redis://r", "FLOWER_BASIC_AUTH": "ops:s3cret,bob:pw"}
    assert not any("s3cret" in a for a in guarded.argv)


def test_run_with_flower_beyond_loopback_and_no_password_refuses_to_start(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "AITASKS_HOST": "0.0.0.0", "AITASKS_PORT": str(free_port()),
           "AITASKS_DATA_DIR": str(tmp_path / "var")}
    r = subprocess.run([sys.executable, "-m", "aitasks.cli.main", "run", "--flower"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "AITASKS_FLOWER_BASIC_AUTH" in r.stdout and "beyond loopback" in r.stdout
    assert not (tmp_path / "var").exists()  # nothing started: no private Redis, no data folder
