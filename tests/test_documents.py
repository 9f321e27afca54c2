"""Document ingestion and search as a service (issue 5, seed 004), through the HTTP API with real workers.

Real files the tests make themselves (reportlab PDFs, a scan rendered with PIL into an image-only PDF,
a python-docx DOCX with a table, a text file), real Tesseract, the real embedding model, a real LanceDB
folder, a real Redis and real Celery workers. No mocks.
"""

from __future__ import annotations

import re
import io
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from stack import Stack, modules_the_api_imports, poll
from test_documents_pipeline import (
    BEES,
    EXPENSES,
    LIGHTHOUSE,
    SCAN_LINES,
    SOURDOUGH,
    encrypted_pdf,
    image_pdf,
    merge_pdfs,
    policies_docx,
    scan_image,
    text_pdf,
    zip_bomb_docx,
)

pytestmark = pytest.mark.slow  # the sentence-transformers model, PostgreSQL

DOCS = "/api/v1/documents"
MAX_UPLOAD_BYTES = 3_000_000
MAX_PAGES = 100
JOB_RETENTION_S = 8  # document_ingestion job records expire soon after they end; document records do not
# One worker process serves both queues (readiness wants each served), with the model preloaded.
WORKER = "worker-cpu,gpu"
ENV = {
    "AITASKS_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
    "AITASKS_MAX_DOCUMENT_PAGES": str(MAX_PAGES),
    "AITASKS_TYPE_OVERRIDES": '{"document_ingestion": {"retention_s": %d}}' % JOB_RETENTION_S,
    "AITASKS_PRELOAD": "document_ingestion",
}


@pytest.fixture(scope="module")
def docs_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("docs"), env=ENV, worker_queues=("cpu,gpu",))
    try:
        s.start()
        yield s
    finally:
        s.stop()


def new_client(s: Stack) -> httpx.Client:
    return s.client(timeout=120)


@pytest.fixture
def dclient(docs_stack: Stack) -> Iterator[httpx.Client]:
    with new_client(docs_stack) as c:
        yield c


# --- helpers ----------------------------------------------------------------------------------------------


def upload(client: httpx.Client, name: str, data: bytes, document_id: str | None = None,
           metadata: str | None = None, path: str = f"{DOCS}/", content_type: str = "application/octet-stream"
           ) -> httpx.Response:
    fields = {k: v for k, v in (("document_id", document_id), ("metadata", metadata)) if v is not None}
    return client.post(path, files={"file": (name, data, content_type)}, data=fields)


def ingest(client: httpx.Client, name: str, data: bytes, document_id: str | None = None, **kw: Any) -> dict[str, Any]:
    r = upload(client, name, data, document_id, **kw)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "processing" and body["message"] == "Processing started in background."
    assert body["task_id"] and body["document_id"] == (document_id or body["document_id"])
    return body  # type: ignore[no-any-return]


def status(client: httpx.Client, document_id: str) -> dict[str, Any]:
    r = client.get(f"{DOCS}/{document_id}/status")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def wait_done(client: httpx.Client, document_id: str, timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = status(client, document_id)
        if body["status"] != "processing":
            return body
        time.sleep(0.1)
    raise AssertionError(f"document {document_id} still processing after {timeout_s}s: {body}")


def completed(client: httpx.Client, name: str, data: bytes, document_id: str | None = None, **kw: Any) -> dict[str, Any]:
    doc = ingest(client, name, data, document_id, **kw)
    done = wait_done(client, doc["document_id"])
    assert done["status"] == "completed", done
    return done


def search(client: httpx.Client, query: str, top_k: int = 5, **kw: Any) -> list[dict[str, Any]]:
    r = client.post("/api/v1/search", json={"query": query, "top_k": top_k, **kw})
    assert r.status_code == 200, r.text
    return r.json()["results"]  # type: ignore[no-any-return]


def store_count(s: Stack, tenant: str, document_id: str) -> int:
    """Chunks in the vector store itself (the same LanceDB folder the service uses)."""
    from aitasks.documents.lancedb_store import LanceDBStore

    return LanceDBStore(s.root / "data" / "vectors", dimension=384).count(tenant, document_id)


def tenant_of(s: Stack, client: httpx.Client) -> str:
    from aitasks.jobs.apikeys import digest
    from aitasks.jobs import keys

    key = client.headers["Authorization"].removeprefix("Bearer ")
    return str(s.redis.hget(keys.api_key(digest(key)), "tenant").decode())


def words_text(paragraphs: int, seed: int = 0) -> str:
    """A long plain-text document of distinct sentences (to keep a worker busy in the embed stage)."""
    import random

    rng = random.Random(seed)
    nouns = ["harbour", "ledger", "violin", "glacier", "orchard", "turbine", "parcel", "lantern", "meadow", "quarry"]
    verbs = ["inspects", "repaints", "measures", "delivers", "repairs", "records", "sorts", "follows"]
    out = []
    for p in range(paragraphs):
        sentences = [f"Clerk {p}-{i} {rng.choice(verbs)} the {rng.choice(nouns)} near {rng.choice(nouns)} "
                     f"number {rng.randint(1, 99999)}." for i in range(12)]
        out.append(" ".join(sentences))
    return "\n\n".join(out)


# --- the documents of one tenant, ingested once for several tests -------------------------------------------


@pytest.fixture(scope="module")
def library(docs_stack: Stack) -> Iterator[dict[str, Any]]:
    """Four real documents of one tenant, ingested through the API, all completed."""
    handbook = text_pdf([[LIGHTHOUSE[0]], [LIGHTHOUSE[1]], [EXPENSES[0]], [EXPENSES[1]]])
    scanned = merge_pdfs(text_pdf([BEES]), image_pdf(scan_image(SCAN_LINES)))  # page 2 is pixels only
    with new_client(docs_stack) as c:
        started = [
            ingest(c, "handbook.pdf", handbook, "handbook", metadata='{"team": "ops", "year": 2026}'),
            ingest(c, "notice.pdf", scanned, "notice"),
            ingest(c, "policies.docx", policies_docx(), "policies", path="/api/ingest/"),  # seed 004's path
            ingest(c, "sourdough.txt", SOURDOUGH.encode(), "sourdough", metadata='{"team": "kitchen"}'),
        ]
        done = {d["document_id"]: wait_done(c, d["document_id"]) for d in started}
        yield {"client": c, "started": {d["document_id"]: d for d in started}, "done": done,
               "tenant": tenant_of(docs_stack, c)}


def test_each_kind_of_document_completes_with_its_pages_chunks_and_ocr(library):
    done = library["done"]
    assert {k: v["status"] for k, v in done.items()} == dict.fromkeys(done, "completed"), done
    assert (done["handbook"]["pages"], done["handbook"]["ocr_pages"]) == (4, 0)
    assert (done["notice"]["pages"], done["notice"]["ocr_pages"]) == (2, 1)
    assert done["policies"]["ocr_pages"] == 0 and done["sourdough"]["pages"] == 1
    for d in done.values():
        assert d["chunks"] >= 1 and d["error"] is None and d["task_id"]
    assert done["handbook"]["metadata"] == {"team": "ops", "year": 2026}
    assert done["handbook"]["filename"] == "handbook.pdf"
    assert [done[d]["doc_type"] for d in ("handbook", "notice", "policies", "sourdough")] == ["pdf", "pdf", "docx", "text"]
    # The seed's status path answers the same.
    c = library["client"]
    for path in ("/api/documents/notice/status/", "/api/documents/notice/status", f"{DOCS}/notice/status/"):
        r = c.get(path)
        assert r.status_code == 200 and r.json()["chunks"] == done["notice"]["chunks"], (path, r.text)


@pytest.mark.parametrize(("question", "document_id", "page", "needle"), [
    ("When did people stop living at the Bell Rock light?", "handbook", 2, "1988"),
    ("How much will the company pay for a hotel room each night?", "handbook", 4, "one hundred and twenty"),
    ("At what hour does the Rotterdam depot shut its doors on Fridays?", "notice", 2, "Rotterdam"),  # the OCR page
    ("How many days of vacation do staff in France get?", "policies", None, "France"),  # the DOCX table
    ("How long should the dough rise in the fridge?", "sourdough", None, "overnight"),
])
def test_a_paraphrased_question_finds_its_sentence_on_top_at_the_right_page(library, question, document_id, page,
                                                                             needle):
    results = search(library["client"], question)
    top = results[0]
    assert (top["document_id"], top["page"]) == (document_id, page), results[:3]
    assert needle.lower() in top["text"].lower()
    assert top["filename"] and top["score"] > 0
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)


def test_search_filters_and_document_ids_narrow_the_results(library):
    c = library["client"]
    only = search(c, "hotel receipt", document_ids=["sourdough"])
    assert only and {r["document_id"] for r in only} == {"sourdough"}
    kitchen = search(c, "hotel receipt", filters={"team": "kitchen"})
    assert kitchen and {r["document_id"] for r in kitchen} == {"sourdough"}
    assert search(c, "hotel receipt", filters={"year": 2026})[0]["document_id"] == "handbook"


def test_another_tenant_finds_nothing_of_the_first_ones(docs_stack, library):
    with new_client(docs_stack) as other:
        assert search(other, "When did people stop living at the Bell Rock light?") == []
        assert other.get(f"{DOCS}/handbook/status").status_code == 404
        assert other.delete(f"{DOCS}/handbook").status_code == 404
        assert other.get(f"{DOCS}/").json()["documents"] == []
    assert status(library["client"], "handbook")["status"] == "completed"  # untouched


def test_search_refuses_bad_input_naming_the_field(dclient):
    for body, field in [({"top_k": 3}, "query"), ({"query": "x", "top_k": 0}, "top_k"),
                        ({"query": "x", "top_k": 1000}, "top_k"), ({"query": "x", "document_ids": ["bad id!"]},
                                                                  "document_ids"),
                        ({"query": "x", "filters": {"bad key!": 1}}, "filters"), ({"query": "x", "extra": 1}, "extra"),
                        ({"query": ""}, "query")]:
        r = dclient.post("/api/v1/search", json=body)
        assert r.status_code == 400, (body, r.text)
        err = r.json()
        assert err["code"] == "validation_error" and field in {re.split(r"[.[]", f["field"])[0] for f in err["fields"]}, (body, err)
    assert dclient.post("/api/v1/search", json={"query": "x"}, headers={"Authorization": "Bearer nope"}).status_code == 401


def test_list_newest_first_with_cursor_then_delete_removes_record_and_vectors(docs_stack, dclient):
    tenant = tenant_of(docs_stack, dclient)
    ids = [f"note-{i}" for i in range(3)]
    for i, doc_id in enumerate(ids):
        completed(dclient, f"{doc_id}.txt", f"{BEES[i % 2]} Note number {i}.".encode(), doc_id)
    first = dclient.get(f"{DOCS}/", params={"limit": 2}).json()
    assert [d["document_id"] for d in first["documents"]] == ["note-2", "note-1"] and first["next_cursor"]
    second = dclient.get(f"{DOCS}/", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [d["document_id"] for d in second["documents"]] == ["note-0"] and second["next_cursor"] is None
    assert all(d["status"] == "completed" and d["chunks"] >= 1 for d in first["documents"] + second["documents"])
    assert dclient.get(f"{DOCS}/", params={"cursor": "???"}).status_code == 400

    assert store_count(docs_stack, tenant, "note-1") >= 1
    assert any(r["document_id"] == "note-1" for r in search(dclient, "waggle dance direction of flowers", 10))
    r = dclient.delete(f"{DOCS}/note-1")
    assert r.status_code == 200, r.text
    assert r.json()["deleted"] is True and r.json()["chunks_deleted"] >= 1
    assert store_count(docs_stack, tenant, "note-1") == 0
    assert all(r["document_id"] != "note-1" for r in search(dclient, "waggle dance direction of flowers", 10))
    assert dclient.get(f"{DOCS}/note-1/status").status_code == 404
    assert dclient.delete(f"{DOCS}/note-1").status_code == 404
    assert [d["document_id"] for d in dclient.get(f"{DOCS}/").json()["documents"]] == ["note-2", "note-0"]


def test_reingesting_a_document_replaces_its_chunks_and_record(docs_stack, dclient):
    tenant = tenant_of(docs_stack, dclient)
    long_first = "\n\n".join(LIGHTHOUSE + EXPENSES + BEES) * 3
    first = completed(dclient, "v1.txt", long_first.encode(), "manual", metadata='{"version": 1}')
    assert store_count(docs_stack, tenant, "manual") == first["chunks"] > 1
    second = completed(dclient, "v2.txt", SOURDOUGH.encode(), "manual", metadata='{"version": 2}')
    assert second["task_id"] != first["task_id"] and second["metadata"] == {"version": 2}
    assert second["filename"] == "v2.txt" and second["chunks"] < first["chunks"]
    assert store_count(docs_stack, tenant, "manual") == second["chunks"]
    hits = search(dclient, "Bell Rock lighthouse keepers", 10, document_ids=["manual"])
    assert hits and all("lighthouse" not in h["text"].lower() for h in hits) and hits[0]["filename"] == "v2.txt"
    assert [d["document_id"] for d in dclient.get(f"{DOCS}/").json()["documents"]] == ["manual"]


def bad_inputs() -> list[tuple[str, str, bytes, int, str]]:
    """(case, filename, bytes, HTTP status at upload, error code): each refused before any job exists."""
    import pypdfium2 as pdfium  # type: ignore[import-untyped]

    many = pdfium.PdfDocument.new()
    for _ in range(MAX_PAGES * 30):
        many.new_page(200, 200)
    absurd = io.BytesIO()
    many.save(absurd)
    good = text_pdf([LIGHTHOUSE])
    return [
        ("encrypted PDF", "locked.pdf", encrypted_pdf(good), 422, "encrypted_document"),
        ("corrupt PDF", "broken.pdf", good[: len(good) // 3], 422, "corrupt_document"),
        ("empty document", "empty.txt", b"", 422, "empty_document"),
        ("only whitespace", "blank.txt", b"  \n\n \t ", 422, "empty_document"),
        ("wrong extension", "handbook.docx", good, 415, "type_mismatch"),
        ("unsupported type", "sheet.xlsx", b"a,b\n1,2\n", 415, "unsupported_document"),
        ("zip bomb as DOCX", "bomb.docx", zip_bomb_docx(8 * 1024 * 1024), 413, "document_too_large"),
        ("absurd page count", "huge.pdf", absurd.getvalue(), 413, "document_too_large"),
        ("over the size limit", "big.txt", b"word " * (MAX_UPLOAD_BYTES // 5 + 100), 413, "payload_too_large"),
    ]


def test_every_bad_input_is_refused_at_upload_naming_the_file_and_the_worker_survives(docs_stack, dclient):
    cases = bad_inputs()
    for case, name, data, code, error_code in cases:
        for path in (f"{DOCS}/", "/api/ingest/"):
            r = upload(dclient, name, data, path=path)
            assert r.status_code == code, (case, path, r.status_code, r.text[:300])
            err = r.json()
            assert err["code"] == error_code, (case, err)
            assert err["error"] and [f["field"] for f in err["fields"]] == ["file"], (case, err)
    assert dclient.get(f"{DOCS}/").json()["documents"] == []  # nothing was accepted
    # Bad fields next to a good file.
    good = SOURDOUGH.encode()
    for fields, field in [({"document_id": "no spaces here"}, "document_id"), ({"metadata": "{not json"}, "metadata"),
                          ({"metadata": '{"nested": {"a": 1}}'}, "metadata"), ({"metadata": "[1]"}, "metadata"),
                          ({"priority": "urgent"}, "priority")]:
        r = dclient.post(f"{DOCS}/", files={"file": ("a.txt", good)}, data=fields)
        assert r.status_code == 400 and field in {f["field"] for f in r.json()["fields"]}, (fields, r.text)
    r = dclient.post(f"{DOCS}/", data={"document_id": "x"})
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "file"
    r = dclient.post(f"{DOCS}/", json={"file": "x"})
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "file"
    # The worker is fine: a good document still goes through.
    assert completed(dclient, "after.txt", good)["chunks"] >= 1


def test_a_document_that_fails_in_the_worker_ends_failed_with_the_reason(docs_stack, dclient):
    # A PDF whose only page is blank: the cheap checks pass (a readable PDF), then OCR finds no text.
    blank = image_pdf(__import__("PIL.Image", fromlist=["Image"]).new("L", (850, 1100), 255))
    doc = ingest(dclient, "blank-scan.pdf", blank, "blank-scan")
    done = wait_done(dclient, doc["document_id"])
    assert done["status"] == "failed" and done["error_type"] == "EmptyDocument", done
    assert "no text" in done["error"] and done["chunks"] is None
    task = dclient.get(f"/api/v1/tasks/{doc['task_id']}/status/").json()
    assert task["status"] == "FAILURE" and task["attempts"] == 1  # a bad file is not retried
    assert completed(dclient, "after.txt", SOURDOUGH.encode())["chunks"] >= 1


def test_the_status_stays_after_the_job_record_expired(docs_stack, dclient):
    done = completed(dclient, "bees.txt", "\n\n".join(BEES).encode(), "bees")
    poll(lambda: not docs_stack.redis.exists(f"aitasks:job:{done['task_id']}"),
         "the job record to expire in Redis", timeout_s=JOB_RETENTION_S + 30, interval_s=0.5)
    later = status(dclient, "bees")
    assert later == done
    assert later["status"] == "completed" and later["chunks"] >= 1 and later["pages"] == 1
    assert search(dclient, "How do bees tell each other where food is?")[0]["document_id"] == "bees"


def test_a_worker_killed_mid_ingestion_leaves_exactly_one_set_of_chunks(docs_stack, dclient):
    tenant = tenant_of(docs_stack, dclient)
    text = words_text(120, seed=2).encode()
    clean = completed(dclient, "clean.txt", text, "clean-run")
    doc = ingest(dclient, "killed.txt", text, "killed-run")
    worker = docs_stack.workers[WORKER]
    # The status shows the job's live progress by stage; kill the pool process once it is embedding.
    stages: list[str] = []

    def embedding() -> bool:
        body = status(dclient, "killed-run")
        assert body["status"] == "processing", body
        if body.get("stage"):
            assert body["task_id"] == doc["task_id"] and 0 <= body["progress"] <= 99, body
            if not stages or stages[-1] != body["stage"]:
                stages.append(body["stage"])
        return body.get("stage") == "embed"

    poll(embedding, "the embed stage", timeout_s=120, interval_s=0.05)
    assert stages[-1] == "embed" and set(stages) <= {"queued", "extract", "chunk", "embed"}, stages
    pool = worker.children()
    assert len(pool) == 1, pool
    os.kill(pool[0], signal.SIGKILL)
    done = wait_done(dclient, "killed-run", timeout_s=300)
    assert done["status"] == "completed", (done, worker.tail())
    assert done["task_id"] == doc["task_id"]
    assert done["chunks"] == clean["chunks"] == store_count(docs_stack, tenant, "killed-run")
    assert done.get("progress") is None and done.get("stage") is None  # live fields only while processing
    r = dclient.get(f"/api/v1/tasks/{doc['task_id']}/status/")
    if r.status_code == 200:  # (unless it expired already)
        assert r.json()["status"] == "SUCCESS"
    assert docs_stack.redis.hget(f"aitasks:job:{doc['task_id']}", "deliveries") in (None, b"2")
    assert worker.alive()


def test_a_cancel_marks_the_document_failed_whoever_writes_it(docs_stack, dclient):
    tenant = tenant_of(docs_stack, dclient)
    running = ingest(dclient, "running.txt", words_text(120, seed=3).encode(), "cancel-running")
    poll(lambda: status(dclient, "cancel-running").get("stage") == "embed", "the embed stage", timeout_s=120,
         interval_s=0.05)
    queued = ingest(dclient, "queued.txt", SOURDOUGH.encode(), "cancel-queued")  # waits behind it (one worker)
    assert status(dclient, "cancel-queued")["stage"] == "queued"
    # A queued job is ended by the API itself; a running one by the job, at its next check.
    for doc in (queued, running):
        r = dclient.post(f"/api/v1/tasks/{doc['task_id']}/cancel/")
        assert r.status_code == 200, r.text
    for doc_id in ("cancel-queued", "cancel-running"):
        done = wait_done(dclient, doc_id)
        assert done["status"] == "failed" and done["error_type"] == "Cancelled", done
        assert "cancelled" in done["error"].lower() and done["chunks"] is None
        assert store_count(docs_stack, tenant, doc_id) == 0
    assert completed(dclient, "after.txt", SOURDOUGH.encode(), "cancel-queued")["chunks"] >= 1  # uploaded again


def test_a_batch_runs_one_job_per_file_under_one_batch_id(docs_stack, dclient):
    files = [("file", ("a.txt", "\n\n".join(BEES).encode(), "text/plain")),
             ("file", ("b.pdf", text_pdf([EXPENSES]), "application/pdf")),
             ("file", ("c.docx", policies_docx(), "application/octet-stream"))]
    r = dclient.post(f"{DOCS}/batch", files=files, data={"metadata": '{"source": "batch"}', "priority": "low"})
    assert r.status_code == 202, r.text
    body = r.json()
    batch_id = body["batch_id"]
    docs = body["documents"]
    assert len(docs) == 3 and len({d["task_id"] for d in docs}) == 3 and len({d["document_id"] for d in docs}) == 3
    for d in docs:  # each a job of its own
        task = dclient.get(f"/api/v1/tasks/{d['task_id']}/status/").json()
        assert task["task_type"] == "document_ingestion" and task["priority"] == "low", task
    summary = poll(lambda: (lambda b: b if b["processing"] == 0 else None)(
        dclient.get(body["status_url"]).json()), "the batch to finish", timeout_s=300, interval_s=0.2)
    assert summary["status"] == "completed" and (summary["total"], summary["completed"], summary["failed"]) == (3, 3, 0)
    assert [d["filename"] for d in summary["documents"]] == ["a.txt", "b.pdf", "c.docx"]
    assert all(d["batch_id"] == batch_id and d["metadata"] == {"source": "batch"} for d in summary["documents"])
    assert search(dclient, "hotel receipt limit per night")[0]["filename"] == "b.pdf"
    # One bad file refuses the whole batch, naming it; nothing starts.
    r = dclient.post(f"{DOCS}/batch", files=[("file", ("ok.txt", b"fine text here", "text/plain")),
                                             ("file", ("bad.pdf", b"%PDF-1.4 garbage", "application/pdf"))])
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "file[1]", r.text
    r = dclient.post(f"{DOCS}/batch", files=files[:1], data={"priority": "soon"})
    assert r.status_code == 400 and r.json()["fields"][0]["field"] == "priority", r.text
    assert dclient.get(f"{DOCS}/batches/nope").status_code == 404
    with new_client(docs_stack) as other:
        assert other.get(body["status_url"]).status_code == 404


def test_a_vector_store_that_cannot_be_opened_is_retried_until_it_can(make_stack, tmp_path):
    blocked = tmp_path / "vectors"
    blocked.write_text("a file where the store's folder should be")  # opening the store fails: OSError
    s = make_stack(env={"AITASKS_VECTOR_STORE": str(blocked),
                        "AITASKS_TYPE_OVERRIDES": '{"document_ingestion": {"max_retries": 5}}'},
                   worker_queues=("cpu,gpu",))
    with new_client(s) as c:
        doc = ingest(c, "bees.txt", "\n\n".join(BEES).encode(), "bees")
        task = poll(lambda: (lambda b: b if b["status"] == "RETRY" or b["attempts"] >= 2 else None)(
            c.get(f"/api/v1/tasks/{doc['task_id']}/status/").json()), "a retry", timeout_s=120, interval_s=0.1)
        assert "vector store cannot be opened" in task["error"], task
        assert status(c, "bees")["status"] == "processing"  # a retry is not the end
        blocked.unlink()  # the store becomes available
        done = wait_done(c, "bees")
        assert done["status"] == "completed" and done["chunks"] >= 1, done
        final = c.get(f"/api/v1/tasks/{doc['task_id']}/status/").json()
        assert final["status"] == "SUCCESS" and final["attempts"] >= 2, final
        assert search(c, "How do bees show where the flowers are?")[0]["document_id"] == "bees"


def test_a_worker_lost_past_the_limit_marks_the_document_failed(make_stack):
    # No more worker losses allowed: the redelivery after one kill ends the job (the worker's runner
    # writes FAILURE WorkerLost), and the document record follows in the same step.
    s = make_stack(env={"AITASKS_MAX_WORKER_LOSSES": "0"}, worker_queues=("cpu,gpu",))
    with new_client(s) as c:
        doc = ingest(c, "doomed.txt", words_text(120, seed=4).encode(), "doomed")
        poll(lambda: status(c, "doomed").get("stage") == "embed", "the embed stage", timeout_s=120, interval_s=0.05)
        pool = s.workers[WORKER].children()
        assert len(pool) == 1, pool
        os.kill(pool[0], signal.SIGKILL)
        done = wait_done(c, "doomed", timeout_s=120)
        assert done["status"] == "failed" and done["error_type"] == "WorkerLost", done
        assert "died" in done["error"] and done["task_id"] == doc["task_id"]
        assert completed(c, "next.txt", SOURDOUGH.encode())["chunks"] >= 1  # the worker carries on


def test_openapi_documents_every_document_path(docs_stack):
    paths = httpx.get(f"{docs_stack.url}/openapi.json", timeout=30).json()["paths"]
    for path, method in [(f"{DOCS}/", "post"), ("/api/ingest/", "post"), (f"{DOCS}/", "get"),
                         (f"{DOCS}/{{document_id}}/status", "get"), ("/api/documents/{document_id}/status/", "get"),
                         (f"{DOCS}/{{document_id}}", "delete"), (f"{DOCS}/batch", "post"),
                         (f"{DOCS}/batches/{{batch_id}}", "get"), ("/api/v1/search", "post")]:
        op = paths.get(path, {}).get(method)
        assert op and op["summary"] and op.get("security") == [{"bearer": []}], (method, path)
        assert "401" in op["responses"]
    upload_op = paths[f"{DOCS}/"]["post"]
    assert {"202", "413", "415", "422"} <= set(upload_op["responses"])
    assert "file" in upload_op["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]


def test_the_api_process_starts_without_the_model_or_the_store_libraries():
    assert modules_the_api_imports(("torch", "sentence_transformers", "transformers", "lancedb", "pyarrow",
                                    "numpy", "pypdfium2", "docx")) == []


def test_direct_submission_of_the_job_type_is_refused_naming_the_upload_path(dclient):
    import base64

    r = dclient.post("/api/v1/tasks/submit/", json={"task_type": "document_ingestion", "document_id": "direct",
                                                    "file": base64.b64encode(SOURDOUGH.encode()).decode()})
    assert r.status_code == 400, r.text
    assert r.json()["fields"][0]["field"] == "task_type" and "POST /api/v1/documents/" in r.json()["error"]
    assert dclient.get(f"{DOCS}/direct/status").status_code == 404
    entry = next(t for t in dclient.get("/api/v1/task-types").json() if t["name"] == "document_ingestion")
    assert entry["submit_path"] == "POST /api/v1/documents/"


def test_the_service_runs_on_the_postgres_backend_too(make_stack):
    """The same API and workers with AITASKS_VECTOR_STORE=postgresql://: a private PostgreSQL + pgvector
    server (tests/pg_server.py) holds the chunks; ingest, search, tenant isolation and delete go through it."""
    from pg_server import running_postgres

    from aitasks.documents.pg_store import PgVectorStore

    with running_postgres() as pg:
        s = make_stack(env={"AITASKS_VECTOR_STORE": pg.url}, worker_queues=("cpu,gpu",))
        with new_client(s) as c, new_client(s) as other:
            done = completed(c, "bees.txt", "\n\n".join(BEES).encode(), "bees")
            tenant = tenant_of(s, c)
            store = PgVectorStore(pg.url, dimension=384)
            try:
                assert store.count(tenant, "bees") == done["chunks"] >= 1
                hits = search(c, "How do bees show where the flowers are?")
                assert hits and hits[0]["document_id"] == "bees", hits
                assert search(other, "How do bees show where the flowers are?") == []
                assert c.delete(f"{DOCS}/bees").status_code in (200, 204)
                assert store.count(tenant, "bees") == 0
                assert search(c, "How do bees show where the flowers are?") == []
            finally:
                store.close()
