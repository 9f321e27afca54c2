"""A real aitasks deployment for tests: its own redis-server on a free port, Celery worker processes
and the API over HTTP, each a subprocess started the way an operator starts them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

import httpx
import redis
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from aitasks.client import sse
from aitasks.jobs.apikeys import create_key
from aitasks.service.logged_process import LoggedProcess
from aitasks.service.redis_server import RedisServer, free_port
from openapi_check import check_for

TERMINAL = {"SUCCESS", "FAILURE", "REVOKED"}

# Fast but realistic settings for tests; a stack may override any of them.
TEST_ENV = {
    "AITASKS_WORKER_HEARTBEAT_S": "0.5",
    "AITASKS_CANCEL_GRACE_S": "2",
    "AITASKS_UNACKED_RESTORE_INTERVAL_S": "1",
    "AITASKS_LOG_LEVEL": "INFO",
    "AITASKS_WEBHOOK_ALLOW_PRIVATE": "127.0.0.0/8,::1",  # the tests' webhook receivers listen on loopback
    "AITASKS_ENABLE_DIAGNOSTIC": "true",  # the suite runs diagnostic jobs everywhere (off by default)
}


Process = LoggedProcess  # the API and workers of a test deployment


class Stack:
    """Redis + workers (one per queue) + API. ``env`` overrides TEST_ENV."""

    def __init__(self, root: Path, env: dict[str, str] | None = None, redis_server: RedisServer | None = None,
                 worker_queues: tuple[str, ...] = ("cpu", "gpu")):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.own_redis = redis_server is None
        self.redis_server = redis_server or RedisServer(root / "redis")
        self.port = free_port()
        self.worker_queues = worker_queues
        self.extra_env = env or {}
        self.workers: dict[str, Process] = {}
        self.api: Process | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AITASKS_")}
        env.update(TEST_ENV)
        env.update({
            "AITASKS_REDIS_URL": self.redis_server.url,
            "AITASKS_DATA_DIR": str(self.root / "data"),
            "AITASKS_PORT": str(self.port),
            "PYTHONUNBUFFERED": "1",
        })
        env.update(self.extra_env)
        return env

    def start(self) -> Stack:
        if self.own_redis:
            self.redis_server.start()
        for queue in self.worker_queues:
            self.start_worker(queue)
        self.api = Process("api", [sys.executable, "-m", "aitasks.cli.main", "api"], self.env(), self.root).start()
        self.wait_ready()
        return self

    def start_worker(self, queue: str, name: str | None = None) -> Process:
        name = name or f"worker-{queue}"
        proc = Process(name, [sys.executable, "-m", "aitasks.cli.main", "worker", "--queues", queue,
                              "--concurrency", "1"], self.env(), self.root).start()
        self.workers[name] = proc
        return proc

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=2)
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = str(exc)
            if self.api is not None and not self.api.alive():
                raise RuntimeError(f"API exited:\n{self.api.tail()}")
            time.sleep(0.2)
        raise RuntimeError(f"stack not ready: {last}\n" + "\n".join(p.tail() for p in self.processes()))

    def wait_workers(self, queues: tuple[str, ...] = ("cpu", "gpu"), timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                body = httpx.get(f"{self.url}/readyz", timeout=2).json()
                if all(body.get("workers", {}).get(q, 0) > 0 for q in queues):
                    return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError("workers did not come up")

    def processes(self) -> list[Process]:
        return [*self.workers.values(), *([self.api] if self.api else [])]

    def stop(self) -> None:
        if self.api:
            self.api.stop(signal.SIGTERM, 10)
        for w in self.workers.values():
            w.stop(signal.SIGTERM, 20)
        if self.own_redis:
            self.redis_server.stop()

    def __enter__(self) -> Stack:
        """``with Stack(...) as s:`` starts it, and stops it at the end even when the start failed."""
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail()}" for p in self.processes())

    # --- helpers for tests -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_server.url)

    def new_key(self, tenant: str | None = None) -> str:
        return create_key(self.redis, tenant or f"t-{uuid.uuid4().hex[:10]}", "test")

    def client(self, key: str | None = None, tenant: str | None = None, timeout: float = 30) -> httpx.Client:
        key = key or self.new_key(tenant)
        # Every answer is checked against the API's OpenAPI document (tests/openapi_check.py).
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout,
                            event_hooks={"response": [check_for(self.url).hook()]})


def submit(client: httpx.Client, task_type: str = "diagnostic", **body: Any) -> str:
    r = client.post("/api/v1/tasks/submit/", json={"task_type": task_type, **body})
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


def wait_status(client: httpx.Client, task_id: str, statuses: set[str] | None = None,
                timeout_s: float = 60) -> dict[str, Any]:
    """Poll until the task reaches one of ``statuses`` (default: a terminal one)."""
    statuses = statuses or TERMINAL
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = client.get(f"/api/v1/tasks/{task_id}/status/")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] in statuses:
            return body
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} did not reach {statuses} in {timeout_s}s; last: {body}")


def sse_events(client: httpx.Client, task_id: str, timeout_s: float = 60) -> Iterator[dict[str, Any]]:
    """The task's SSE stream as its JSON events, until the stream ends (parsed by the client's parser)."""
    with client.stream("GET", f"/api/v1/tasks/{task_id}/events", timeout=timeout_s) as r:
        assert r.status_code == 200, r.read()
        yield from sse.updates(r.iter_lines())


def poll(fn: Callable[[], Any], what: str, timeout_s: float = 90, interval_s: float = 0.1) -> Any:
    """Call ``fn`` until it returns something truthy; fail with ``what`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def key_of(client: httpx.Client) -> str:
    return client.headers["Authorization"].removeprefix("Bearer ")


def ws_paths(task_id: str) -> list[str]:
    """The task's WebSocket, at our path and at the seed 003 alias."""
    return [f"/api/v1/tasks/{task_id}/ws", f"/api/ws/tasks/{task_id}"]


def ws_open(stack: Stack, path: str, key: str | None) -> ClientConnection:
    headers = {"Authorization": f"Bearer {key}"} if key is not None else None
    return connect("ws" + stack.url.removeprefix("http") + path, additional_headers=headers,
                   open_timeout=30, close_timeout=10, proxy=None)


def ws_recv(ws: ClientConnection, timeout_s: float = 60) -> dict[str, Any]:
    import json

    return json.loads(ws.recv(timeout=timeout_s))  # type: ignore[no-any-return]


def ws_rest(ws: ClientConnection, timeout_s: float = 120) -> tuple[list[dict[str, Any]], int | None]:
    """Every further message until the server closes; returns them and the close code."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            messages.append(ws_recv(ws, max(0.1, deadline - time.monotonic())))
        except ConnectionClosed as exc:
            return messages, exc.rcvd.code if exc.rcvd else None


def ws_refused(stack: Stack, path: str, key: str | None) -> tuple[dict[str, Any], int | None]:
    """An error message and the close code of a WebSocket the server refuses."""
    with ws_open(stack, path, key) as ws:
        messages, code = ws_rest(ws, 30)
    assert len(messages) == 1, messages
    return messages[0], code


@contextmanager
def queue_held(client: httpx.Client, queue: str = "cpu") -> Iterator[Callable[[], None]]:
    """Keep the queue's only worker busy with a long job until ``release()`` cancels it, so a job
    submitted meanwhile waits in the queue and a subscriber sees its whole history."""
    blocker = submit(client, parameters={"duration_s": 60, "steps": 240, "queue": queue})
    assert wait_status(client, blocker, {"PROCESSING"} | TERMINAL)["status"] == "PROCESSING"
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            released = True
            r = client.post(f"/api/v1/tasks/{blocker}/cancel/")
            assert r.status_code == 200, r.text

    try:
        yield release
    finally:
        release()
        assert wait_status(client, blocker)["status"] == "REVOKED"


@contextmanager
def running_stack(root: Path, env: dict[str, str] | None = None) -> Iterator[Stack]:
    """A started Stack, stopped on exit (for fixtures of any scope)."""
    s = Stack(root, env=env)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def modules_the_api_imports(candidates: tuple[str, ...]) -> list[str]:
    """Which of ``candidates`` a fresh process has imported once it loaded the catalog and the API app
    (the API must stay light: models and heavy libraries belong to the workers)."""
    code = ("import sys; from aitasks.processors.registry import load_all; load_all(); import aitasks.api.app; "
            f"print(','.join(sorted(m for m in {candidates!r} if m in sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"AITASKS_REDIS_URL": "redis://127.0.0.1:1/0", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    return [m for m in out.stdout.strip().split(",") if m]
