"""A cluster of hosts for tests and benchmarks (tests/netns_hosts.py): Redis and an S3 server (moto) on one
host, PostgreSQL on one, the API on one, and workers on as many more as asked, each running the ordinary
commands (`aitasks api`, `aitasks worker`) with URLs only and a data folder of its own."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis

import netns_hosts
from aitasks.jobs import keys
from aitasks.jobs.apikeys import create_key
from aitasks.jobs.artifacts import open_artifacts
from aitasks.jobs.s3_artifacts import S3ArtifactStore
from aitasks.service.logged_process import LoggedProcess
from aitasks.service.redis_server import find_redis_server
from aitasks.settings import Settings
from pg_server import PgServer
from stack import TEST_ENV, poll

LEASE_S = 5
PASSWORD = "cluster-secret"
BUCKET = "aitasks-cluster"
# The code under test on every host: a checkout run with PYTHONPATH=<its src> (a worktree sharing another's
# virtualenv) runs its own code there too, not the one the virtualenv installed.
PYTHONPATH = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}


class Cluster:
    def __init__(self, root: Path, hosts: dict[str, netns_hosts.Host], env: dict[str, str] | None = None) -> None:
        self.root = root
        self.hosts = hosts
        self.workers = sorted(h for h in hosts if h.startswith("w"))
        self.extra_env = env or {}
        self.processes: dict[str, LoggedProcess] = {}
        self.redis_url = f"redis://:{PASSWORD}@{hosts['redis'].address}:6379/0"
        self.s3_url = f"http://{hosts['redis'].address}:9000"
        self.api_url = f"http://{hosts['api'].address}:8000"
        (root / "pg").mkdir()
        self.pg = PgServer(root / "pg", 5432, host=hosts["pg"].address, wrap=hosts["pg"].argv,
                           trust=f"{hosts['pg'].address.rsplit('.', 1)[0]}.0/24")

    def env(self, host: str) -> dict[str, str]:
        """A host's settings: URLs only, and a data folder no other host sees."""
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.root), "PYTHONUNBUFFERED": "1", **TEST_ENV,
            "AITASKS_REDIS_URL": self.redis_url, "AITASKS_DATABASE_URL": self.pg.url,
            "AITASKS_ARTIFACTS_URL": f"s3://{BUCKET}/cluster", "AITASKS_S3_ENDPOINT_URL": self.s3_url,
            "AITASKS_S3_ACCESS_KEY_ID": "testing", "AITASKS_S3_SECRET_ACCESS_KEY": "testing",
            "AITASKS_S3_REGION": "us-east-1", "AITASKS_SECRET_KEY": "one-secret-for-every-host-of-this-cluster",
            "AITASKS_DATA_DIR": str(self.root / host / "data"), "AITASKS_LEASE_S": str(LEASE_S),
            **PYTHONPATH, **self.extra_env,
        }

    def start(self, name: str, host: str, *command: str) -> LoggedProcess:
        (self.root / host).mkdir(parents=True, exist_ok=True)
        proc = LoggedProcess(name, self.hosts[host].argv(*command), self.env(host), self.root / host).start()
        self.processes[name] = proc
        return proc

    def start_all(self, concurrency: int = 1) -> None:
        redis_dir = self.root / "redis" / "db"
        redis_dir.mkdir(parents=True)
        server = find_redis_server()
        assert server, "no redis-server"
        self.start("redis", "redis", server, "--bind", self.hosts["redis"].address, "--port", "6379",
                   "--requirepass", PASSWORD, "--save", "", "--appendonly", "no", "--dir", str(redis_dir))
        self.start("s3", "redis", sys.executable, "-m", "moto.server", "-H", self.hosts["redis"].address, "-p", "9000")
        self.pg.init()
        self.pg.start(timeout_s=60)
        r = redis.Redis.from_url(self.redis_url)
        poll(lambda: _answers(lambda: r.ping()), "Redis on its host", 30)
        store = open_artifacts(Settings(artifacts_url=f"s3://{BUCKET}/setup", s3_endpoint_url=self.s3_url,
                                        s3_access_key_id="testing", s3_secret_access_key="testing",
                                        s3_region="us-east-1"))
        store = store.inner  # the backend under the storage meter (jobs/storage_quota.py)
        assert isinstance(store, S3ArtifactStore)
        poll(lambda: _answers(lambda: store.client.create_bucket(Bucket=BUCKET)), "the S3 server on its host", 60)
        py = [sys.executable, "-m", "aitasks.cli.main"]
        for worker in self.workers:
            self.start(f"worker-{worker}", worker, *py, "worker", "--queues", "cpu,gpu", "--concurrency", str(concurrency))
        self.start("api", "api", *py, "api", "--host", self.hosts["api"].address, "--port", "8000")
        poll(lambda: _answers(lambda: httpx.get(f"{self.api_url}/readyz", timeout=2).status_code == 200),
             "the API to be ready", 90)
        poll(lambda: r.zcard(keys.LEASES) >= len(self.workers), "every worker host's lease", 60)

    def stop(self) -> None:
        for name in ("api", *(f"worker-{w}" for w in self.workers), "s3", "redis"):
            if name in self.processes:
                self.processes[name].stop(timeout_s=15)
        self.pg.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {n} ---\n{p.tail(30)}" for n, p in self.processes.items()) + \
            f"\n--- postgres ---\n{self.pg.logs()[-2000:]}"

    def host_of(self, worker_field: str) -> str:
        """The worker host whose main process is named in a job's ``worker`` (``cpu.<pid>@<host>``)."""
        pid = int(worker_field.split("@")[0].rsplit(".", 1)[1])
        return next(n.removeprefix("worker-") for n, p in self.processes.items() if p.pid == pid)


    def client(self, tenant: str = "cluster-tenant", timeout: float = 30) -> httpx.Client:
        key = create_key(redis.Redis.from_url(self.redis_url), tenant, "test")
        return httpx.Client(base_url=self.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)


@contextlib.contextmanager
def running_cluster(workers: int = 2, concurrency: int = 1, env: dict[str, str] | None = None) -> Iterator[Cluster]:
    """A started cluster with ``workers`` worker hosts (w1, w2, ...), stopped and removed on the way out (its
    processes' logs printed if it failed)."""
    # Not pytest's tmp_path: the PostgreSQL host's server runs as nobody, who cannot enter it (pg_server.py).
    root = Path(tempfile.mkdtemp(prefix="aitasks-cluster-"))
    root.chmod(0o755)
    with netns_hosts.lan(["redis", "pg", "api", *(f"w{i}" for i in range(1, workers + 1))]) as (_, hosts):
        cluster = Cluster(root, hosts, env)
        try:
            cluster.start_all(concurrency)
            yield cluster
        except BaseException:
            print(cluster.logs())
            raise
        finally:
            cluster.stop()
            shutil.rmtree(root, ignore_errors=True)


def _answers(fn: Any) -> bool:
    try:
        return fn() is not False
    except Exception:  # not up yet: any client error while it starts
        return False
