"""(d') A document through the service: upload -> ``completed``, next to the same pipeline in this process.

    .venv/bin/python -m bench.documents_e2e [--quick]

A private redis-server, the API (one uvicorn process) and one worker on the ``cpu`` queue with one pool
process (``AITASKS_PRELOAD=document_ingestion``: the model loads when the worker starts), on free ports
of 127.0.0.1 under a temporary folder; all stopped and removed at the end. One document at a time:
``POST /api/v1/documents/`` (multipart, the N-page text PDF of ``documents_bench``), then
``GET /api/v1/documents/{id}/status`` every 20 ms until ``completed``. Next to it, in this process,
``pipeline.ingest_document`` of the same bytes into a LanceDB folder (the bare pipeline, what the worker
runs inside the job). Rounds alternate; best of each. Ratio = bare time / service time (pages/s
through the service over pages/s of the bare pipeline).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.documents_bench import long_pdf
from bench.procs import Cleanup, in_temp_folder, quick_flag

V1 = "/api/v1/documents"


def _upload_and_wait(client: httpx.Client, data: bytes, document_id: str, timeout_s: float = 300) -> dict[str, Any]:
    r = client.post(f"{V1}/", files={"file": (f"{document_id}.pdf", data, "application/pdf")},
                    data={"document_id": document_id})
    if r.status_code != 202:
        raise RuntimeError(f"upload answered {r.status_code}: {r.text[:300]}")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = client.get(f"{V1}/{document_id}/status").json()
        if status.get("status") == "completed":
            return dict(status)
        if status.get("status") == "failed":
            raise RuntimeError(f"ingestion failed: {status.get('error')}")
        time.sleep(0.02)
    raise RuntimeError(f"{document_id} not completed after {timeout_s} s")


def run(root: Path, logs: Path, cleanup: Cleanup, quick: bool = False) -> dict[str, Any]:
    from aitasks.documents.embedding import load_embedder
    from aitasks.documents.lancedb_store import LanceDBStore
    from aitasks.documents.pipeline import ingest_document
    from bench.stacks import AitasksStack

    pages, rounds = (8, 1) if quick else (20, 5)
    root.mkdir(parents=True, exist_ok=True)
    data, warm = long_pdf(pages), long_pdf(2)
    stack = AitasksStack("documents", root, logs, cleanup).start_api()
    stack.start_worker(1, "cpu", env={"AITASKS_PRELOAD": "document_ingestion"})
    client = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.new_key()}"}, timeout=60)
    cleanup.push("documents e2e client", client.close)
    embedder = load_embedder()
    store = LanceDBStore(root / "bare-vectors", dimension=embedder.dimension)
    _upload_and_wait(client, warm, "warm")
    ingest_document(store, embedder, "bench", "warm", warm, filename="warm.pdf")
    service, bare, status = [], [], {}
    for i in range(rounds):
        for which in (("api", "bare") if i % 2 == 0 else ("bare", "api")):
            started = time.perf_counter()
            if which == "api":
                status = _upload_and_wait(client, data, "long")
                service.append(time.perf_counter() - started)
            else:
                ingest_document(store, embedder, "bench", "long", data, filename="long.pdf")
                bare.append(time.perf_counter() - started)
    api_s, bare_s = min(service), min(bare)
    return {"pages": pages, "rounds": rounds, "chunks": status.get("chunks"),
            "service_pages_per_s": round(pages / api_s, 2), "bare_pages_per_s": round(pages / bare_s, 2),
            "ratio": round(bare_s / api_s, 3), "service_s": round(api_s, 3), "bare_s": round(bare_s, 3)}


def render(result: dict[str, Any]) -> str:
    return (f"  (d') {result['pages']}-page text PDF through the service (upload -> completed, 1 worker process), "
            f"best of {result['rounds']}: {result['service_pages_per_s']:.2f} pages/s vs ingest_document in-process "
            f"{result['bare_pages_per_s']:.2f} pages/s = {result['ratio']:.2f}x")


def main(argv: list[str] | None = None) -> int:
    quick = quick_flag("python -m bench.documents_e2e", __doc__, argv, "a shorter document, one round")
    return in_temp_folder("aitasks-bench-docs-e2e-", lambda root, cleanup: render(
        run(root, root / "logs", cleanup, quick)))


if __name__ == "__main__":
    sys.exit(main())
