"""`aitasks run`: the whole service on one machine (private Redis, a cpu and a gpu worker, the API).

Children run in their own sessions, so Ctrl-C reaches only this supervisor, which stops them in
order: the API first (no new jobs), then the workers (each finishes or hands back its job), then
Redis (flushing its append-only file). A worker that dies is started again, and so is the private Redis
(locked: a password, no CONFIG/DEBUG/MODULE, a memory cap; docs/security.md, item 8).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from aitasks.errors import ConfigurationError, ServiceUnavailable
from aitasks.jobs.apikeys import first_key, refill
from aitasks.service import flower
from aitasks.service.redis_server import RedisServer, write_private
from aitasks.settings import Settings

WORKER_STOP_S = 60.0


def cli_path() -> str:
    """How to call this installation's ``aitasks`` (``.venv/bin/aitasks`` from the checkout)."""
    path = Path(sys.executable).parent / "aitasks"
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def key_banner(tenant: str, key: str | None) -> list[str]:
    """The start banner's lines about the key: the one just made, or how to make one."""
    if key is not None:
        return [f"API key (tenant '{tenant}'): {key}"]
    return [f"tenant '{tenant}' already has an API key; it cannot be shown again (only its digest is stored).",
            f"another key:  {cli_path()} keys create --tenant {tenant}   (list them: {cli_path()} keys list)"]


@dataclass
class Child:
    name: str
    argv: list[str]
    restart: bool
    proc: subprocess.Popen[bytes] | None = None
    restarts: list[float] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)  # for this child alone (Flower's password)

    def start(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(self.argv, env={**env, **self.extra_env}, start_new_session=True,
                                     stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait(self, timeout_s: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


class Supervisor:
    def __init__(self, settings: Settings, tenant: str = "default", flower_port: int | None = None):
        self.settings = settings
        self.tenant = tenant
        self.flower_port = flower_port
        self.redis: RedisServer | None = None
        self.redis_restarts: list[float] = []
        self.children: list[Child] = []
        self.stopping = False

    def say(self, text: str) -> None:
        print(text, flush=True)

    def run(self) -> int:
        s = self.settings
        if self.flower_port:  # before anything binds or starts
            try:
                flower.check_access(s.host, s.flower_basic_auth)
            except ConfigurationError as exc:
                self.say(f"error: {exc}")
                return 2
        if not port_free(s.host, s.port):
            self.say(f"error: port {s.port} on {s.host} is in use; set AITASKS_PORT to another port")
            return 2
        try:  # the store of record's schema first: a database newer than this code stops everything here
            from aitasks.store import engine as store_engine
            from aitasks.store.startup import at_start

            if at_start(s.resolved_database_url, retry_in_background=False):
                self.say(f"job history in {store_engine.shown(s.resolved_database_url)} (AITASKS_DATABASE_URL)")
        except ConfigurationError as exc:
            self.say(f"error: {exc}")
            return 2
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        env = dict(os.environ)
        env["AITASKS_DATA_DIR"] = str(s.data_dir.resolve())
        if self.flower_port:
            env["AITASKS_TASK_EVENTS"] = "true"  # Flower's task list is built from the workers' task events
        try:
            url = self._start_redis(env)
            key = self._first_key(redis.Redis.from_url(url))
            py = sys.executable
            for queue in ("cpu", "gpu"):
                self.children.append(Child(f"worker-{queue}", [py, "-m", "aitasks.cli.main", "worker",
                                                                "--queues", queue, "--concurrency", "1"], True))
            self.children.append(Child("api", [py, "-m", "aitasks.cli.main", "api"], False))
            if self.flower_port:
                command = flower.flower_command(py, s.broker_url or url, s.host, self.flower_port, s.flower_basic_auth)
                self.children.append(Child("flower", command.argv, True, extra_env=command.env))
            for child in self.children:
                child.start(env)
            base = f"http://{s.host}:{s.port}"
            if self._wait_ready(base):
                self.say("")
                self.say(f"aitasks is running at {base}   (API docs: {base}/docs)")
                for line in key_banner(self.tenant, key):
                    self.say(line)
                if self.flower_port:
                    self.say(f"Flower (Celery monitoring): http://{s.host}:{self.flower_port}")
                self.say(f'try:  curl -H "Authorization: Bearer {key or "<your key>"}" {base}/api/v1/task-types')
                self.say("Ctrl-C stops everything.")
                self.say("")
            return self._watch(env)
        finally:
            self._shutdown()

    def _first_key(self, r: redis.Redis) -> str | None:
        """The keys of the store of record cached in Redis again (after Redis lost its data), then a key for
        the tenant if it has none. With the database down: Redis's keys only, and no new key (said why)."""
        import sqlalchemy as sa

        from aitasks.store import engine as store_engine

        db = store_engine.create(self.settings.resolved_database_url)
        try:
            refilled = refill(r, db)
            if refilled:
                self.say(f"{refilled} API key(s) restored into Redis from the store of record")
            return first_key(r, self.tenant, name="make run", db=db)
        except (sa.exc.SQLAlchemyError, ServiceUnavailable) as exc:
            self.say(f"warning: the store of record cannot be reached ({str(exc).splitlines()[0]}); no API key "
                     f"made now: run `{cli_path()} keys create --tenant {self.tenant}` when it is back")
            return None
        finally:
            db.dispose()

    def _start_redis(self, env: dict[str, str]) -> str:
        s = self.settings
        if s.redis_url:
            self.say(f"using Redis at {s.redis_url} (AITASKS_REDIS_URL)")
            return s.redis_url
        # Password, CONFIG/DEBUG/MODULE off, a memory cap (docs/security.md, item 8).
        self.redis = RedisServer(s.data_dir / "redis", protected=True,
                                 maxmemory_bytes=s.redis_maxmemory_mb * 1024 * 1024).start()
        s.run_dir.mkdir(parents=True, exist_ok=True)
        write_private(s.embedded_redis_url_file, self.redis.url + "\n")  # the URL carries the password
        env["AITASKS_REDIS_URL"] = self.redis.url
        self.say(f"private Redis on redis://127.0.0.1:{self.redis.port}/0 (password in "
                 f"{s.embedded_redis_url_file}; data in {self.redis.data_dir}, append-only file on)")
        return self.redis.url

    def _watch_redis(self) -> bool:
        """Start the private Redis again if it died (same port, password and data: the same URL, so the
        API and workers reconnect by themselves). False when it keeps dying."""
        if self.redis is None or self.redis.alive() or self.stopping:
            return True
        code = self.redis.proc.returncode if self.redis.proc else None
        now = time.monotonic()
        self.redis_restarts = [t for t in self.redis_restarts if now - t < 60] + [now]
        if len(self.redis_restarts) > 5:
            self.say(f"redis-server keeps dying (code {code}); stopping")
            return False
        self.say(f"redis-server exited (code {code}); starting it again")
        try:
            self.redis.start()
        except RuntimeError as exc:
            self.say(f"redis-server did not start again: {exc}")
        return True

    def _wait_ready(self, base: str, timeout_s: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.stopping:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            api = next(c for c in self.children if c.name == "api")
            if not api.alive():
                self.say("error: the API process exited; see the messages above")
                return False
            time.sleep(0.3)
        return False

    def _watch(self, env: dict[str, str]) -> int:
        while not self.stopping:
            if not self._watch_redis():
                return 1
            for child in self.children:
                if child.alive() or self.stopping:
                    continue
                code = child.proc.returncode if child.proc else None
                if not child.restart:
                    self.say(f"{child.name} exited (code {code}); stopping")
                    return 1
                now = time.monotonic()
                child.restarts = [t for t in child.restarts if now - t < 60] + [now]
                if len(child.restarts) > 5:
                    self.say(f"{child.name} keeps dying (code {code}); stopping")
                    return 1
                self.say(f"{child.name} exited (code {code}); starting it again")
                child.start(env)
            time.sleep(0.5)
        return 0

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.say("\nstopping aitasks…")

    def _shutdown(self) -> None:
        self.stopping = True
        for name in ("api", "flower"):
            for child in self.children:
                if child.name == name:
                    child.signal(signal.SIGTERM)
                    if not child.wait(10):
                        child.signal(signal.SIGKILL)
                        child.wait(5)
        workers = [c for c in self.children if c.name.startswith("worker")]
        for child in workers:
            child.signal(signal.SIGTERM)  # warm shutdown: finish the running job
        deadline = time.monotonic() + WORKER_STOP_S
        for child in workers:
            if not child.wait(max(0.1, deadline - time.monotonic())):
                # Killed outright, its job stays unacknowledged in Redis and runs again later.
                child.signal(signal.SIGKILL)
                child.wait(5)
        if self.redis is not None:
            self.redis.stop()
            self.settings.embedded_redis_url_file.unlink(missing_ok=True)
        self.say("stopped.")
