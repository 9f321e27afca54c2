"""Batched embedding across concurrent ingestion jobs in one worker process (issue 22), as a service.

A real Redis, the API and one worker started with ``--pool threads --concurrency 6`` (6 jobs in one
process, one model); the real embedding model and LanceDB store. No mocks: batching is read from the
jobs' results (``embedding_batch``) and the worker's log, vectors from search scores.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from stack import Process, Stack, poll
from test_documents import DOCS, status, wait_done, words_text

pytestmark = pytest.mark.slow  # the sentence-transformers model

THREADS = 6
# A killed worker's jobs are queued again by a live one after the lease (30 s by default).
ENV = {"AITASKS_PRELOAD": "document_ingestion", "AITASKS_LEASE_S": "10"}
TOPICS = ["harbour cranes", "violin varnish", "glacier melt", "orchard frost", "turbine blades", "parcel lockers",
          "lantern wicks", "meadow hay", "quarry blasting", "ledger audits", "bee swarms", "tide tables"]


class ThreadsStack(Stack):
    """The usual test deployment, but its worker runs jobs as threads of one process."""

    def start_worker(self, queue: str, name: str | None = None) -> Process:
        name = name or f"worker-{queue}"
        proc = Process(name, [sys.executable, "-m", "aitasks.cli.main", "worker", "--queues", queue,
                              "--concurrency", str(THREADS), "--pool", "threads"], self.env(), self.root).start()
        self.workers[name] = proc
        return proc


@pytest.fixture(scope="module")
def tstack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with ThreadsStack(tmp_path_factory.mktemp("batching"), env=ENV, worker_queues=("cpu,gpu",)) as s:
        yield s


@pytest.fixture
def client(tstack: Stack) -> Iterator[httpx.Client]:
    with tstack.client(timeout=120) as c:
        yield c


def note(topic: str) -> str:
    return (f"This note is about {topic}. The {topic} team meets on Tuesdays to check the {topic} log and to plan "
            f"the next season's work on {topic}, writing every decision into the shared notebook.")


def upload_batch(client: httpx.Client, files: list[tuple[str, bytes]]) -> str:
    r = client.post(f"{DOCS}/batch", files=[("file", (name, data, "text/plain")) for name, data in files])
    assert r.status_code == 202, r.text
    return str(r.json()["status_url"])


def wait_batch(client: httpx.Client, status_url: str, timeout_s: float = 300) -> dict[str, Any]:
    return poll(lambda: (b := client.get(status_url).json())["status"] != "processing" and b, "the batch",
                timeout_s=timeout_s, interval_s=0.2)


def task_result(client: httpx.Client, task_id: str) -> dict[str, Any]:
    body = client.get(f"/api/v1/tasks/{task_id}/result/").json()
    assert body["status"] == "SUCCESS", body
    return dict(body["result"])


def test_concurrent_documents_share_model_calls_and_get_the_same_vectors(tstack: Stack, client: httpx.Client) -> None:
    done = wait_batch(client, upload_batch(client, [(f"n{i}.txt", note(t).encode()) for i, t in enumerate(TOPICS)]))
    assert done["status"] == "completed" and done["completed"] == len(TOPICS), done
    results = [task_result(client, d["task_id"]) for d in done["documents"]]
    # Chunks of different jobs went through the model together (each note is one chunk)...
    assert all(r["chunks"] == 1 for r in results)
    assert max(r["embedding_batch"] for r in results) > 1, [r["embedding_batch"] for r in results]
    # ...and their documents went into the store in shared commits.
    assert max(r["store_batch"] for r in results) > 1, [r["store_batch"] for r in results]
    assert {r["model_loads_in_process"] for r in results} == {1}  # one model for the process's 6 job threads
    # ...and each got its own vector: the model's plain call on the stored text gives the search's cosine.
    from aitasks.documents.embedding import load_embedder

    embedder = load_embedder()
    for doc, topic in list(zip(done["documents"], TOPICS, strict=True))[:4]:
        query = f"when does the {topic} team meet?"
        r = client.post("/api/v1/search", json={"query": query, "top_k": 1, "alpha": 1.0})
        assert r.status_code == 200, r.text
        hit = r.json()["results"][0]
        assert hit["document_id"] == doc["document_id"]
        cosine = float(np.dot(embedder.encode_query(query), embedder.encode([hit["text"]])[0]))
        assert hit["score"] == pytest.approx(cosine, abs=1e-5)


def test_a_cancel_inside_a_batch_stops_that_document_only(tstack: Stack, client: httpx.Client) -> None:
    long_doc = words_text(200, seed=11).encode()  # ~200 chunks: many batches of 16
    files = [("long.txt", long_doc)] + [(f"s{i}.txt", note(t).encode()) for i, t in enumerate(TOPICS[:5])]
    status_url = upload_batch(client, files)
    long_id = client.get(status_url).json()["documents"][0]["document_id"]
    stages: list[str] = []

    def embedding() -> bool:
        body = status(client, long_id)
        if body.get("stage") and (not stages or stages[-1] != body["stage"]):
            stages.append(body["stage"])
        return body.get("stage") == "embed"

    poll(embedding, "the long document's embed stage", timeout_s=120, interval_s=0.05)
    assert set(stages) <= {"queued", "extract", "chunk", "embed"}, stages  # progress by stage, as alone
    task_id = status(client, long_id)["task_id"]
    assert client.post(f"/api/v1/tasks/{task_id}/cancel/").status_code in (200, 202)
    done = wait_batch(client, status_url)
    by_id = {d["document_id"]: d for d in done["documents"]}
    assert by_id[long_id]["status"] == "failed" and "cancel" in by_id[long_id]["error"].lower(), by_id[long_id]
    assert done["completed"] == 5, done  # the others finished, their batches unharmed
    # The cancelled job's chunks not yet in a batch were dropped, not computed (the worker says so).
    worker = tstack.workers["worker-cpu,gpu"]
    try:
        poll(lambda: "items of a stopped job dropped" in worker.tail(1000), "the worker's log of dropped items",
             timeout_s=20)
    except AssertionError:
        raise AssertionError("\n".join(line for line in worker.tail(1000).splitlines()
                                       if "aitasks.worker" in line or "ancel" in line)[-6000:]) from None
    # The worker goes on: a document uploaded now completes.
    r = client.post(f"{DOCS}/", files={"file": ("after.txt", note("salt marsh").encode(), "text/plain")})
    assert r.status_code == 202, r.text
    assert wait_done(client, r.json()["document_id"], timeout_s=120)["status"] == "completed"


def test_a_worker_killed_mid_batch_loses_and_doubles_no_document(tstack: Stack) -> None:
    """SIGKILL the whole threads worker (its 6 job threads, the shared model calls and store commits)
    while a batch of documents is in flight, start another: every document ends completed, each with
    exactly its own chunks in the store (a commit is all its documents or none; a run again replaces)."""
    from aitasks.documents.lancedb_store import LanceDBStore
    from test_documents import tenant_of

    with tstack.client(tenant="killed-batch", timeout=120) as client:
        tenant = tenant_of(tstack, client)
        files = [(f"k{i}.txt", (note(t) + " " + note(t[::-1])).encode()) for i, t in enumerate(TOPICS)]
        status_url = upload_batch(client, files)

        def in_flight() -> bool:
            body = client.get(status_url).json()
            assert body["status"] == "processing", body  # (not all done before the kill)
            return bool(body["completed"] >= 1 and body["completed"] + body["failed"] <= len(files) - 3)

        poll(in_flight, "some documents completed and others in flight", timeout_s=180, interval_s=0.05)
        worker = tstack.workers["worker-cpu,gpu"]
        worker.kill_group()
        assert not worker.alive()
        tstack.start_worker("cpu,gpu")
        done = wait_batch(client, status_url, timeout_s=300)
        assert done["status"] == "completed" and done["completed"] == len(files), done
        store = LanceDBStore(tstack.root / "data" / "vectors", dimension=384)
        listed = {d.document_id: d.chunks for d in store.list_documents(tenant)}
        assert listed == {d["document_id"]: d["chunks"] for d in done["documents"]}, listed
        assert store.count(tenant) == sum(d["chunks"] for d in done["documents"])
        assert any(tstack.redis.hget(f"aitasks:job:{d['task_id']}", "deliveries") == b"2"
                   for d in done["documents"])  # some ran again on the new worker
