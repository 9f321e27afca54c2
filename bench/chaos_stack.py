"""The chaos run's private deployment: its own redis-server (append-only file, fsync every second) on a free
port, the API, cpu workers kept alive as `aitasks run` keeps them, a webhook receiver on 127.0.0.1 and the
diagnostic jobs' ledger (a file outside Redis where each run writes when it starts and when it is done)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

from aitasks.jobs.apikeys import create_key
from aitasks.service.redis_server import RedisServer, free_port
from bench.procs import Cleanup, Proc, child_env, wait_http

LEDGER_ENV = "AITASKS_DIAGNOSTIC_LEDGER"  # read by processors/diagnostic.py in the pool processes


@dataclass
class Hook:
    webhook_id: str
    event: str
    status: str
    at: float


class Receiver:
    """Records every webhook it is sent, per job id; answers 204 (a delivered webhook is not retried)."""

    def __init__(self) -> None:
        self.by_job: dict[str, list[Hook]] = {}
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    doc = json.loads(body)
                    hook = Hook(self.headers.get("webhook-id", ""), str(doc.get("event")), str(doc.get("status")),
                                time.time())
                    with receiver.lock:
                        receiver.by_job.setdefault(str(doc.get("task_id")), []).append(hook)
                except (ValueError, AttributeError):
                    pass  # not ours: still answered, never counted
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, name="chaos-receiver", daemon=True).start()

    def completed(self, job_id: str) -> list[Hook]:
        with self.lock:
            return [h for h in self.by_job.get(job_id, []) if h.event == "completed"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class LedgerLine:
    event: str  # start | done
    job: str
    attempt: int
    delivery: int
    pid: int
    t: float


def read_ledger(path: Path) -> list[LedgerLine]:
    if not path.exists():
        return []
    lines: list[LedgerLine] = []
    for raw in path.read_text(errors="replace").splitlines():
        try:
            d = json.loads(raw)
            lines.append(LedgerLine(d["event"], d["job"], d["attempt"], d["delivery"], d["pid"], d["t"]))
        except (ValueError, KeyError):
            continue  # a line cut by a kill mid-write (never seen: one O_APPEND write each)
    return lines


@dataclass
class Worker:
    """One `aitasks worker --queues cpu`; restarted by the keeper when it dies, as `aitasks run` does."""

    proc: Proc
    restarts: list[float] = field(default_factory=list)
    orphans: list[tuple[int, int]] = field(default_factory=list)  # (pid, pgid) of pool processes left behind


class ChaosStack:
    def __init__(self, root: Path, workers: int, concurrency: int, cleanup: Cleanup):
        self.root = root
        self.log_dir = root / "logs"
        self.ledger = root / "ledger.jsonl"
        self.cleanup = cleanup
        self.concurrency = concurrency
        self.redis_server = RedisServer(root / "redis")  # appendonly yes, appendfsync everysec
        self.port = free_port()
        self.api: Proc | None = None
        self.workers: list[Worker] = []
        self.n_workers = workers
        self.receiver = Receiver()
        cleanup.push("webhook receiver", self.receiver.stop)
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return child_env({
            "AITASKS_REDIS_URL": self.redis_server.url,
            "AITASKS_DATA_DIR": str(self.root / "data"),
            "AITASKS_PORT": str(self.port),
            "AITASKS_ENABLE_DIAGNOSTIC": "true",
            "AITASKS_WEBHOOK_ALLOW_PRIVATE": "127.0.0.0/8,::1",  # the receiver listens on loopback
            "AITASKS_WORKER_CONCURRENCY": str(self.concurrency),
            LEDGER_ENV: str(self.ledger),
            **(extra or {}),
        })

    def start(self) -> ChaosStack:
        self.root.mkdir(parents=True, exist_ok=True)
        self.redis_server.start()
        self.cleanup.push("redis-server", self._stop_redis)
        self.cleanup.push("api", lambda: self.api.stop(10) if self.api else None)
        self.start_api()
        for i in range(self.n_workers):
            proc = Proc(f"worker-cpu-{i}", [sys.executable, "-m", "aitasks.cli.main", "worker", "--queues", "cpu",
                                            "--concurrency", str(self.concurrency)], self.env(), self.log_dir)
            proc.start()
            self.workers.append(Worker(proc))
        self.cleanup.push("workers", self._stop_workers)
        threading.Thread(target=self._keep_workers, name="chaos-keeper", daemon=True).start()
        self.wait_pools()
        return self

    def start_api(self) -> None:
        self.api = Proc("api", [sys.executable, "-m", "aitasks.cli.main", "api"], self.env(), self.log_dir)
        self.api.start()
        wait_http(f"{self.url}/healthz", self.api, timeout_s=120)

    def restart_api(self) -> None:
        assert self.api is not None
        self.api.stop(10)  # SIGTERM: a deploy's restart
        self.start_api()

    def wait_pools(self, timeout_s: float = 90) -> None:
        """Until every worker has its pool processes up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(w.proc.alive() and len(w.proc.children()) >= self.concurrency for w in self.workers):
                return
            time.sleep(0.2)
        raise RuntimeError("workers did not start their pools:\n" + "\n".join(w.proc.tail() for w in self.workers))

    def _keep_workers(self) -> None:
        while not self._stopping.wait(0.5):
            with self._lock:
                for w in self.workers:
                    if not w.proc.alive() and not self._stopping.is_set():
                        w.restarts.append(time.time())
                        w.proc.start()

    def kill_worker_main(self, w: Worker) -> int:
        """SIGKILL the worker's main process only (its pool processes are left as an OOM kill leaves them)."""
        with self._lock:
            pid = w.proc.pid
            w.orphans += [(child, pid) for child in w.proc.children()]
            os.kill(pid, signal.SIGKILL)
            assert w.proc.proc is not None
            w.proc.proc.wait(10)
        return pid

    def new_key(self) -> str:
        r = redis.Redis.from_url(self.redis_server.url)
        try:
            return create_key(r, f"chaos-{uuid.uuid4().hex[:8]}", "chaos")
        finally:
            r.close()

    def _stop_workers(self) -> None:
        self._stopping.set()
        with self._lock:
            for w in self.workers:
                w.proc.stop(20)
                for pid, pgid in w.orphans:  # only our own leftovers: same pid, same group, an aitasks process
                    try:
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                        if os.getpgid(pid) == pgid and b"aitasks" in cmd:
                            os.kill(pid, signal.SIGKILL)
                    except (OSError, ProcessLookupError):
                        pass

    def _stop_redis(self) -> None:
        proc = self.redis_server.proc
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)  # never leave a stopped server behind
        self.redis_server.stop()

    def logs(self, lines: int = 30) -> str:
        procs = [w.proc for w in self.workers] + ([self.api] if self.api else [])
        return "\n".join(f"--- {p.name} ---\n{p.tail(lines)}" for p in procs)
