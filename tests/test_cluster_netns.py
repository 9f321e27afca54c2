"""Several machines for real (issue 21): five hosts in network namespaces on one bridge (tests/netns_cluster.py):
Redis and an S3 server (moto) on one, PostgreSQL on one, the API on one, a worker on each of two more. Each
host runs the ordinary commands (`aitasks api`, `aitasks worker`) with URLs only and a data folder of its
own, so every file a job reads or writes goes through the bucket, and every record through Redis and SQL.

Checked as a user would: jobs submitted to the API run on both worker hosts and their files download from
the API; pulling one worker host's cable mid-job (its bridge link down) ends that job SUCCESS once, on the
other host, with the SSE client on the API seeing each state and one end; plugging it back in, the host
rejoins and runs jobs again; the history lists the jobs from PostgreSQL.
"""

from __future__ import annotations

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
from netns_cluster import Cluster, running_cluster
from pictures import astronaut, b64, png
from stack import poll, sse_events, wait_status

pytestmark = pytest.mark.slow
if reason := netns_hosts.available():
    pytestmark = [pytestmark, pytest.mark.skip(reason=reason)]  # type: ignore[list-item]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with running_cluster(workers=2) as started:
        yield started


def test_jobs_run_on_both_worker_hosts_and_their_files_cross_hosts_through_the_bucket(cluster: Cluster) -> None:
    """Jobs with an image go to both worker hosts; each thumbnail, written by a worker host into the bucket,
    downloads from the API host; the history lists them from PostgreSQL."""
    image = b64(png(astronaut()[:96, :96]))
    with cluster.client() as c:
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
    with cluster.client() as c:
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
        # Taken back (RETRY, written in the step that queues the message again: worker/requeue.lua), then run
        # again on the survivor (its worker above).
        assert "RETRY" in statuses, statuses
        retry = statuses.index("RETRY")
        assert "PROCESSING" in statuses[:retry] and "PROCESSING" in statuses[retry:], statuses
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
    try:
        for event in sse_events(c, task_id, timeout_s=120):
            out.append(event)
    except httpx.HTTPError as exc:  # recorded for the assertion's message
        out.append({"status": f"stream error: {exc}", "seq": -1})
