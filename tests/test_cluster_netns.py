"""Several machines for real (issue 21): five hosts in network namespaces on one bridge (tests/netns_hosts.py):
Redis and an S3 server (moto) on one, PostgreSQL on one, the API on one, a worker on each of two more. Each
host runs the ordinary commands (`aitasks api`, `aitasks worker`) with URLs only and a data folder of its
own, so every file a job reads or writes goes through the bucket, and every record through Redis and SQL.

Checked as a user would: jobs submitted to the API run on both worker hosts and their files download from
the API; pulling one worker host's cable mid-job (its bridge link down) ends that job SUCCESS once, on the
other host, with the SSE client on the API seeing each state and one end; plugging it back in, the host
rejoins and runs jobs again; the history lists the jobs from PostgreSQL.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
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
from pictures import astronaut, b64, png
from stack import TEST_ENV, poll, wait_status

pytestmark = pytest.mark.slow
if reason := netns_hosts.available():
    pytestmark = [pytestmark, pytest.mark.skip(reason=reason)]  # type: ignore[list-item]

LEASE_S = 5
PASSWORD = "cluster-secret"
BUCKET = "aitasks-cluster"


class Cluster:
    def __init__(self, root: Path, hosts: dict[str, netns_hosts.Host]) -> None:
        self.root = root
        self.hosts = hosts
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
        }

    def start(self, name: str, host: str, *command: str) -> LoggedProcess:
        (self.root / host).mkdir(parents=True, exist_ok=True)
        proc = LoggedProcess(name, self.hosts[host].argv(*command), self.env(host), self.root / host).start()
        self.processes[name] = proc
        return proc

    def start_all(self) -> None:
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
        assert isinstance(store, S3ArtifactStore)
        poll(lambda: _answers(lambda: store.client.create_bucket(Bucket=BUCKET)), "the S3 server on its host", 60)
        py = [sys.executable, "-m", "aitasks.cli.main"]
        for worker in ("w1", "w2"):
            self.start(f"worker-{worker}", worker, *py, "worker", "--queues", "cpu,gpu", "--concurrency", "1")
        self.start("api", "api", *py, "api", "--host", self.hosts["api"].address, "--port", "8000")
        poll(lambda: _answers(lambda: httpx.get(f"{self.api_url}/readyz", timeout=2).status_code == 200),
             "the API to be ready", 90)
        poll(lambda: r.zcard(keys.LEASES) >= 2, "both worker hosts' leases", 60)

    def stop(self) -> None:
        for name in ("api", "worker-w1", "worker-w2", "s3", "redis"):
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


def _answers(fn: Any) -> bool:
    try:
        return fn() is not False
    except Exception:  # not up yet: any client error while it starts
        return False


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # Not pytest's tmp_path: the PostgreSQL host's server runs as nobody, who cannot enter it (pg_server.py).
    root = Path(tempfile.mkdtemp(prefix="aitasks-cluster-"))
    root.chmod(0o755)
    with netns_hosts.lan(["redis", "pg", "api", "w1", "w2"]) as (_, hosts):
        cluster = Cluster(root, hosts)
        try:
            cluster.start_all()
            yield cluster
        except BaseException:
            print(cluster.logs())
            raise
        finally:
            cluster.stop()
            shutil.rmtree(root, ignore_errors=True)


def client(cluster: Cluster) -> httpx.Client:
    key = create_key(redis.Redis.from_url(cluster.redis_url), "cluster-tenant", "test")
    return httpx.Client(base_url=cluster.api_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def test_jobs_run_on_both_worker_hosts_and_their_files_cross_hosts_through_the_bucket(cluster: Cluster) -> None:
    """Jobs with an image go to both worker hosts; each thumbnail, written by a worker host into the bucket,
    downloads from the API host; the history lists them from PostgreSQL."""
    image = b64(png(astronaut()[:96, :96]))
    with client(cluster) as c:
        ids = []
        for _ in range(8):
            r = c.post("/api/v1/tasks/submit/", json={"task_type": "diagnostic", "image": image,
                                                      "parameters": {"duration_s": 0.5, "steps": 2}})
            assert r.status_code == 202, r.text
            ids.append(r.json()["task_id"])
        hosts = set()
        for task_id in ids:
            final = wait_status(c, task_id, timeout_s=120)
            assert final["status"] == "SUCCESS", f"{final}\n{cluster.logs()}"
            hosts.add(cluster.host_of(final["worker"]))
            thumb = c.get(f"/api/v1/tasks/{task_id}/artifacts/thumbnail.png")
            assert thumb.status_code == 200 and thumb.content.startswith(b"\x89PNG"), thumb.status_code
        assert hosts == {"w1", "w2"}, hosts  # 8 jobs of 0.5 s on two one-slot hosts: both take some
        for host in ("api", "w1", "w2"):  # nothing went through a host's own folder
            assert not list((cluster.root / host / "data").rglob("thumbnail.png")), host
        listed = poll(lambda: {t["task_id"] for t in c.get("/api/v1/tasks/", params={"limit": 50}).json()["tasks"]}
                      >= set(ids), "the jobs in the history", 30)
        assert listed


def test_a_worker_host_cut_off_mid_job_loses_it_to_the_other_and_rejoins_when_plugged_back(cluster: Cluster) -> None:
    """The worker host running a job loses its cable: after the lease (5 s) the other host runs the job, it ends
    SUCCESS once, and an SSE client on the API saw each state and one end. Cable back: the host rejoins (its
    stale run's writes refused) and takes jobs again."""
    with client(cluster) as c:
        r = c.post("/api/v1/tasks/submit/", json={"task_type": "diagnostic", "parameters": {"duration_s": 8, "steps": 16}})
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        events: list[dict[str, Any]] = []
        reader = threading.Thread(target=_read_events, args=(c, task_id, events), daemon=True)
        reader.start()
        running = wait_status(c, task_id, {"PROCESSING"}, timeout_s=60)
        victim = cluster.host_of(running["worker"]) if running.get("worker") else \
            cluster.host_of(poll(lambda: redis.Redis.from_url(cluster.redis_url).hget(keys.job(task_id), "worker"),
                                 "the job's worker").decode())
        survivor = "w2" if victim == "w1" else "w1"
        cut_at = time.monotonic()
        cluster.hosts[victim].cut()
        try:
            final = wait_status(c, task_id, timeout_s=90)
            took = time.monotonic() - cut_at
            assert final["status"] == "SUCCESS", f"{final}\n{cluster.logs()}"
            assert cluster.host_of(final["worker"]) == survivor, final
            assert took < 60, took  # the lease, not kombu's visibility timeout (960 s)
        finally:
            cluster.hosts[victim].mend()
        reader.join(30)
        statuses = [e["status"] for e in events]
        assert statuses and statuses[-1] == "SUCCESS", statuses
        assert [s for s in statuses if s in ("SUCCESS", "FAILURE", "REVOKED")] == ["SUCCESS"], statuses
        assert "PROCESSING" in statuses and "RETRY" in statuses, statuses  # taken back, then run again
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs), seqs
        rec = redis.Redis.from_url(cluster.redis_url).hgetall(keys.job(task_id))
        assert rec.get(b"finished_deliveries") == b"1", rec  # ended once

        # Plugged back in: the stale run is refused, and the host takes jobs again.
        poll(lambda: "lost the job" in Path(cluster.processes[f"worker-{victim}"].log_path).read_text(),
             "the stale run to stop", timeout_s=60)
        seen: set[str] = set()

        def both_hosts_run_jobs() -> bool:
            batch = [c.post("/api/v1/tasks/submit/", json={"task_type": "diagnostic",
                                                           "parameters": {"duration_s": 0.5, "steps": 1}}).json()["task_id"]
                     for _ in range(4)]
            for job in batch:
                final = wait_status(c, job, timeout_s=60)
                assert final["status"] == "SUCCESS", final
                seen.add(cluster.host_of(final["worker"]))
            return victim in seen

        poll(both_hosts_run_jobs, f"{victim} to run jobs again", timeout_s=120, interval_s=0)
        assert cluster.processes[f"worker-{victim}"].alive()


def _read_events(c: httpx.Client, task_id: str, out: list[dict[str, Any]]) -> None:
    """The job's SSE stream on the API host, as a browser would hold it, until the stream ends."""
    from stack import sse_events

    try:
        for event in sse_events(c, task_id, timeout_s=120):
            out.append(event)
    except httpx.HTTPError as exc:  # recorded for the assertion's message
        out.append({"status": f"stream error: {exc}", "seq": -1})
