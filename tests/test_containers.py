"""The container deployment (Dockerfile, compose.yaml) built and run for real with Podman and podman-compose.

`make test-containers` selects it (marker ``containers``; pyproject's addopts deselect it from `make test`:
building an image with its models takes minutes cold). It builds the base image without a registry
(scripts/container-base.sh: debootstrap, `podman import`; cached under var/containers/) and the image
(scripts/container-build.sh; Podman's layer cache under var/containers/storage), starts the compose
stack under a project name of its own on free high ports, with containers/compose.no-gpu.yaml (no GPU
here: the gpu worker runs without its device reservation), then checks: /readyz, real jobs over HTTP on
both queues (diagnostic, and background_removal with MediaPipe's model from the image), Flower's basic
auth, each service's health check, that no process in any container runs as root; and tears it all down.
Podman settings: scripts/containers-env.sh (runtime runc, explicit ulimits, project-local store).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.containers, pytest.mark.slow, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "localhost/aitasks:dev"
DATASTORES = "localhost/aitasks-datastores:dev"
APP_SERVICES = ("api", "worker-cpu", "worker-gpu", "flower")
SERVICES = ("redis", "postgres", *APP_SERVICES)


def podman_env() -> dict[str, str]:
    """The environment scripts/containers-env.sh sets up (CONTAINERS_CONF, CONTAINERS_STORAGE_CONF)."""
    out = subprocess.run(["bash", "-c", f"source {ROOT}/scripts/containers-env.sh && env -0"],
                         check=True, capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.split("\0") if "=" in line)


def free_port() -> int:
    with socket.socket() as s:  # the kernel's pick: an unused port of the ephemeral (high) range
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(argv: list[str], env: dict[str, str], timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv[:4])}... exited {result.returncode}:\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}")
    return result


def timed_build(env: dict[str, str]) -> float:
    start = time.monotonic()
    run(["bash", "scripts/container-build.sh", IMAGE, DATASTORES], env, timeout=3000)
    return time.monotonic() - start


@pytest.fixture(scope="module")
def stack():
    compose = os.environ.get("PODMAN_COMPOSE") or shutil.which("podman-compose")
    assert compose and shutil.which("podman"), "needs podman and podman-compose (make test-containers installs them)"
    env = {**os.environ, **podman_env()}
    build_s = timed_build(env)
    size = run(["podman", "image", "inspect", IMAGE, "--format", "{{.Size}}"], env).stdout.strip()
    print(f"\nimages built in {build_s:.0f} s; {IMAGE} is {int(size) / 1e9:.2f} GB")

    project = f"aitasks-test-{os.getpid()}"
    api_port, flower_port = free_port(), free_port()
    flower_auth = f"admin:{secrets.token_hex(8)}"
    env.update({
        "REDIS_PASSWORD": secrets.token_hex(16), "POSTGRES_PASSWORD": secrets.token_hex(16),
        "AITASKS_SECRET_KEY": secrets.token_hex(32), "FLOWER_BASIC_AUTH": flower_auth,
        "API_PORT": str(api_port), "FLOWER_PORT": str(flower_port), "BIND_ADDRESS": "127.0.0.1",
        "AITASKS_PUBLIC_URL": f"http://127.0.0.1:{api_port}", "AITASKS_ENABLE_DIAGNOSTIC": "true",
        "AITASKS_IMAGE": IMAGE, "AITASKS_DATASTORES_IMAGE": DATASTORES,
    })
    base = [compose, "-p", project, "-f", "compose.yaml", "-f", "containers/compose.no-gpu.yaml"]
    info = {"env": env, "project": project, "api": f"http://127.0.0.1:{api_port}",
            "flower": f"http://127.0.0.1:{flower_port}", "flower_auth": flower_auth, "build_s": build_s}
    volumes_before = set(run(["podman", "volume", "ls", "--format", "{{.Name}}"], env).stdout.split())
    try:
        run([*base, "up", "-d"], env, timeout=600)
        yield info
    finally:
        for service in SERVICES:  # the logs, for a failure's report
            logs = run(["podman", "logs", "--tail", "15", f"{project}_{service}_1"], env, check=False)
            print(f"--- {service}\n{logs.stdout[-1500:]}{logs.stderr[-1500:]}")
        run([*base, "down", "-v", "-t", "20"], env, timeout=600, check=False)
        leftovers = teardown_leftovers(project, env, volumes_before)
        assert leftovers == [], f"left behind: {leftovers}"


def teardown_leftovers(project: str, env: dict[str, str], volumes_before: set[str]) -> list[str]:
    """Removes whatever `down -v` left of this project (containers, pod, network, volumes, anonymous ones
    too: any volume that was not there before); lists it."""
    label = f"label=io.podman.compose.project={project}"
    left = []
    for kind, listing, removal in (
        ("container", ["podman", "ps", "-a", "--filter", label, "--format", "{{.Names}}"], ["podman", "rm", "-f"]),
        ("pod", ["podman", "pod", "ls", "--filter", f"name=pod_{project}", "--format", "{{.Name}}"],
         ["podman", "pod", "rm", "-f"]),
        ("volume", ["podman", "volume", "ls", "--format", "{{.Name}}"], ["podman", "volume", "rm", "-f"]),
        ("network", ["podman", "network", "ls", "--filter", f"name={project}_", "--format", "{{.Name}}"],
         ["podman", "network", "rm"]),
    ):
        names = run(listing, env, check=False).stdout.split()
        for name in names:
            if kind == "volume" and name in volumes_before:
                continue
            left.append(f"{kind} {name}")
            run([*removal, name], env, check=False)
    return left


def wait_ready(url: str, timeout_s: float = 600) -> dict:
    deadline, body = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/readyz", timeout=5)
            body = response.json()
            if response.status_code == 200:
                return body
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(3)
    raise AssertionError(f"/readyz not ready after {timeout_s:.0f} s: {body}")


def astronaut_png() -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).resize((256, 256)).save(buf, format="PNG")
    return buf.getvalue()


def test_the_compose_stack_runs_jobs_as_non_root_with_health_checks(stack):
    env, project, api = stack["env"], stack["project"], stack["api"]
    started = time.monotonic()
    ready = wait_ready(api)
    print(f"/readyz 200 after {time.monotonic() - started:.0f} s: {ready}")
    assert ready["workers"]["cpu"] >= 1 and ready["workers"]["gpu"] >= 1 and ready["database"] == "ok"

    key = run(["podman", "exec", f"{project}_api_1", "aitasks", "keys", "create", "--tenant", "containers",
               "--scope", "admin"], env).stdout.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {key}", "Prefer": "wait=60"}
    with httpx.Client(base_url=api, headers=headers, timeout=90) as client:
        for queue in ("cpu", "gpu"):
            response = client.post("/api/v1/tasks/submit/", json={
                "task_type": "diagnostic", "parameters": {"duration_s": 1, "steps": 2, "queue": queue}})
            body = response.json()
            print(f"diagnostic on {queue}: {response.status_code} {body.get('status')} in {body.get('queue')}")
            assert response.status_code == 200 and body["status"] == "SUCCESS" and body["queue"] == queue, body
        response = client.post("/api/v1/tasks/submit/", data={"task_type": "background_removal"},
                               files={"image": ("astronaut.png", astronaut_png(), "image/png")})
        body = response.json()
        print(f"background_removal: {response.status_code} {body.get('status')} "
              f"{json.dumps(body.get('result', {}))[:300]}")
        assert response.status_code == 200 and body["status"] == "SUCCESS", body

    redis = f"{project}_redis_1"  # a password, and the append-only file on its volume
    assert "NOAUTH" in run(["podman", "exec", redis, "redis-cli", "ping"], env, check=False).stdout
    aof = run(["podman", "exec", redis, "ls", "/var/lib/redis/appendonlydir"], env).stdout.split()
    assert any(name.endswith(".incr.aof") for name in aof), aof

    flower, auth = stack["flower"], tuple(stack["flower_auth"].split(":", 1))
    assert httpx.get(f"{flower}/", timeout=10).status_code == 401
    assert httpx.get(f"{flower}/", auth=auth, timeout=10).status_code == 200

    for service in SERVICES:  # Podman 4.3 schedules health checks with systemd timers: none here, run them
        container = f"{project}_{service}_1"
        check = run(["podman", "healthcheck", "run", container], env, check=False)
        status = run(["podman", "inspect", container, "--format", "{{.State.Health.Status}}"], env).stdout.strip()
        print(f"health {service}: rc {check.returncode} {status} {check.stdout.strip()}")
        assert check.returncode == 0 and status == "healthy", (service, check.stdout, check.stderr)

    for service in SERVICES:
        container = f"{project}_{service}_1"
        top = run(["podman", "top", container, "user", "pid", "args"], env).stdout.strip().splitlines()
        users = {line.split()[0] for line in top[1:]}
        print(f"processes of {service}: {len(top) - 1}, users {sorted(users)}")
        assert len(top) > 1 and "root" not in users and "0" not in users, top
