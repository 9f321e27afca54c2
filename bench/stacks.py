"""The deployments under test, each on its own private redis-server and free ports of 127.0.0.1:
the aitasks API (and its worker), the bare FastAPI app, and a raw Celery worker."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import orjson
import redis

from aitasks.jobs import keys
from aitasks.jobs.apikeys import create_key
from aitasks.service.redis_server import RedisServer, free_port
from bench.procs import Cleanup, Proc, child_env, wait_http

UVICORN_LIKE_AITASKS = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--workers", "1",
                        "--timeout-graceful-shutdown", "5", "--log-level", "warning"]


def start_redis(data_dir: Path, cleanup: Cleanup) -> RedisServer:
    """A private redis-server configured as `aitasks run` configures its own (append-only file on)."""
    server = RedisServer(data_dir).start()
    cleanup.push(f"redis-server :{server.port}", server.stop)
    return server


class AitasksStack:
    """The API (one uvicorn process, as `aitasks api` runs it) and optionally a cpu worker."""

    def __init__(self, name: str, root: Path, log_dir: Path, cleanup: Cleanup, env: dict[str, str] | None = None):
        """``env``: settings of the whole deployment (API and workers), e.g. AITASKS_BROKER_URL."""
        self.name = name
        self.extra_env = env or {}
        self.root = root
        self.log_dir = log_dir
        self.cleanup = cleanup
        self.redis_server = start_redis(root / "redis", cleanup)
        self.port = free_port()
        self.api: Proc | None = None
        self.worker: Proc | None = None  # the last one started
        self.workers: list[Proc] = []

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return child_env({
            "AITASKS_REDIS_URL": self.redis_server.url,
            "AITASKS_DATA_DIR": str(self.root / "data"),
            "AITASKS_PORT": str(self.port),
            "AITASKS_ENABLE_DIAGNOSTIC": "true",  # the benchmarks submit diagnostic jobs
            **self.extra_env,
            **(extra or {}),
        })

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_server.url)

    def new_key(self) -> str:
        return create_key(self.redis(), f"bench-{uuid.uuid4().hex[:8]}", "bench")

    def start_api(self) -> AitasksStack:
        self.api = Proc(f"{self.name}-api", [sys.executable, "-m", "aitasks.cli.main", "api"],
                        self.env(), self.log_dir).start()
        self.cleanup.push(self.api.name, self.api.stop)
        wait_http(f"{self.url}/healthz", self.api)
        return self

    def start_worker(self, concurrency: int, queue: str = "cpu", env: dict[str, str] | None = None,
                     label: str = "") -> AitasksStack:
        """An `aitasks worker` for ``queue`` with ``concurrency`` pool processes; ``env``: more environment
        of its own (e.g. AITASKS_PRELOAD)."""
        worker = Proc(f"{self.name}-worker-{queue}{label}",
                      [sys.executable, "-m", "aitasks.cli.main", "worker", "--queues", queue,
                       "--concurrency", str(concurrency)],
                      self.env({"AITASKS_WORKER_CONCURRENCY": str(concurrency), **(env or {})}),
                      self.log_dir).start()
        self.worker = worker
        self.workers.append(worker)
        self.cleanup.push(worker.name, worker.stop)
        self.wait_worker(queue, worker)
        return self

    def stop_workers(self) -> None:
        """Stop every worker started so far (their cleanup entries then find them stopped)."""
        for worker in self.workers:
            worker.stop()
        self.workers.clear()
        self.worker = None

    def wait_worker(self, queue: str, worker: Proc | None = None, timeout_s: float = 60) -> None:
        """Until ``worker`` (default: the last one started) sends its heartbeat for ``queue`` (what /readyz
        reads)."""
        worker = worker or self.worker
        assert worker is not None
        r = self.redis()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not worker.alive():
                raise RuntimeError(f"worker exited:\n{worker.tail()}")
            for name in r.scan_iter(match=keys.WORKERS_PATTERN):
                raw = r.get(name)
                info = orjson.loads(raw) if raw else {}
                if queue in info.get("queues", []) and info.get("pid") == worker.pid:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"no {queue} worker heartbeat after {timeout_s}s")


def start_bare_app(log_dir: Path, cleanup: Cleanup) -> str:
    port = free_port()
    proc = Proc("bare-api", [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--host", "127.0.0.1",
                             "--port", str(port), *UVICORN_LIKE_AITASKS], child_env({}), log_dir).start()
    cleanup.push(proc.name, proc.stop)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc)
    return url


class RawCelery:
    """A raw Celery worker (prefork, given concurrency) on its own redis-server, and a client app."""

    def __init__(self, root: Path, log_dir: Path, cleanup: Cleanup, concurrency: int):
        from bench.raw_celery import make_app

        self.redis_server = start_redis(root / "redis-raw", cleanup)
        self.url = self.redis_server.url
        self.concurrency = concurrency
        self.worker = Proc("raw-celery-worker", [
            sys.executable, "-m", "celery", "-A", "bench.raw_celery", "worker", "-P", "prefork",
            "-c", str(concurrency), "-Q", "bench", "-n", f"raw.{uuid.uuid4().hex[:6]}@%h",
            "--without-gossip", "--without-mingle", "--loglevel", "INFO",
        ], child_env({"BENCH_RAW_REDIS_URL": self.url}), log_dir).start()
        cleanup.push(self.worker.name, self.worker.stop)
        self.app = make_app(self.url)
        cleanup.push("raw celery client", self.app.close)
        self.noop = self.app.tasks["bench.noop"]
        self.wait_ready()

    def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.worker.alive():
                raise RuntimeError(f"raw celery worker exited:\n{self.worker.tail()}")
            try:
                self.noop.delay().get(timeout=2)
                return
            except Exception:
                time.sleep(0.2)
        raise RuntimeError(f"raw celery worker not answering:\n{self.worker.tail()}")

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)
