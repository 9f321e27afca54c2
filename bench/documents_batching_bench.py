"""(d'') Dynamic batching of document embeddings (issue 22): 50 one-page documents ingested at once.

    .venv/bin/python -m bench.documents_batching_bench [--quick]
    .venv/bin/python -m bench.run_all --only documents-batching

1. Through the service: a private redis-server, the API and one worker on the ``cpu`` queue (model
   preloaded), on free ports of 127.0.0.1; ``POST /api/v1/documents/batch`` with 50 one-page PDFs, then
   ``GET /api/v1/documents/batches/{id}`` every 50 ms until no document is processing; documents/s from the upload
   to the last one completed. **Baseline:** today's worker, one pool process (prefork): one job at a
   time, each embedding its own chunks. **Batched:** one worker ``--pool threads --concurrency 8``:
   8 jobs at once in one process, their chunks embedded together (``documents/batched.py``). And, to
   tell the shared model calls from running jobs side by side, the same threads worker with
   ``AITASKS_EMBEDDING_MAX_BATCH=1`` (each chunk its own model call). And a reference that is not the
   baseline: today's worker with torch on one thread (``OMP_NUM_THREADS=1``), to tell what the threads
   worker's one-thread model calls alone would give it. Rounds alternate the order (a worker is started
   for each mode and round); best round of each.
2. The pipeline alone (``--in-process`` runs only this part): the same 50 documents through
   ``ingest_document`` in this process, one at a time vs 8 threads through the batched steps (shared
   model calls, shared store commits), and the one-thread reference; 3 rounds.
3. Search quality: both labelled sets' documents (bench/search_corpus.py, bench/search_tuning_set.py)
   ingested in this process one at a time (the embedder's own call) and by 8 threads through the batched
   step; the stored vectors compared, and hit@1 / MRR of ``store.search()`` on every question of both sets.
"""

from __future__ import annotations

import queue
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.documents_bench import _paragraphs
from bench.procs import Cleanup, in_temp_folder, quick_flag
from bench.search_corpus import text_pdf

V1 = "/api/v1/documents"
THREADS = 8
REFERENCE = "reference: one at a time, torch on 1 thread (prefork, OMP_NUM_THREADS=1)"
IN_PROCESS_REFERENCE = "reference: one at a time, torch on 1 thread"
_torch_default: list[int] = []  # torch's own default (one per core), read before anything sets it
TENANT = "bench"


def one_page_pdfs(count: int, tag: str) -> list[tuple[str, bytes]]:
    """``count`` different one-page PDFs of three paragraphs (~150-200 tokens: one chunk each)."""
    pool = _paragraphs()
    return [(f"{tag}-{n}.pdf", text_pdf([[f"Note {n}. " + pool[(n * 3 + k) % len(pool)] for k in range(3)]]))
            for n in range(count)]


def _batch_through_api(client: httpx.Client, files: list[tuple[str, bytes]], timeout_s: float = 600) -> dict[str, Any]:
    started = time.perf_counter()
    r = client.post(f"{V1}/batch", files=[("file", (name, data, "application/pdf")) for name, data in files])
    if r.status_code != 202:
        raise RuntimeError(f"batch upload answered {r.status_code}: {r.text[:300]}")
    status_url = r.json()["status_url"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(status_url).json()
        if body["status"] != "processing":
            elapsed = time.perf_counter() - started
            if body["completed"] != len(files):
                errors = {d.get("error") for d in body["documents"] if d["status"] != "completed"}
                raise RuntimeError(f"batch ended {body['status']}: {body['failed']} failed: {errors}")
            return {"seconds": elapsed, "docs_per_s": len(files) / elapsed}
        time.sleep(0.05)
    raise RuntimeError("batch not done in time")


def service_part(root: Path, cleanup: Cleanup, docs: int, rounds: int) -> dict[str, Any]:
    from bench.stacks import AitasksStack

    stack = AitasksStack("batching", root, root / "logs", cleanup).start_api()
    client = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.new_key()}"}, timeout=120)
    cleanup.push("batching client", client.close)
    # (pool, jobs at once, chunks per model call, more environment): the third mode runs the jobs at once
    # without sharing model calls, to tell what the shared calls add from what running jobs side by side
    # adds; the fourth is a reference, not the baseline: today's worker with torch on one thread
    # (OMP_NUM_THREADS=1), to tell what the threads worker's one-thread calls alone would give it.
    modes = {"one at a time (prefork, 1 process)": ("prefork", 1, 16, {}),
             f"batched (threads, {THREADS} jobs in 1 process)": ("threads", THREADS, 16, {}),
             f"threads, {THREADS} jobs, no shared calls (max batch 1)": ("threads", THREADS, 1, {}),
             REFERENCE: ("prefork", 1, 16, {"OMP_NUM_THREADS": "1"})}
    runs: dict[str, list[float]] = {m: [] for m in modes}
    for i in range(rounds):
        order = list(modes) if i % 2 == 0 else list(reversed(modes))
        for mode in order:
            pool, concurrency, max_batch, more = modes[mode]
            stack.start_worker(concurrency, "cpu", env={"AITASKS_PRELOAD": "document_ingestion",
                                                        "AITASKS_WORKER_POOL": pool,
                                                        "AITASKS_EMBEDDING_MAX_BATCH": str(max_batch), **more})
            _batch_through_api(client, one_page_pdfs(4, f"warm{i}{pool}"))  # first jobs: connections, copies
            runs[mode].append(_batch_through_api(client, one_page_pdfs(docs, f"r{i}{pool}"))["docs_per_s"])
            stack.stop_workers()
    best = {m: max(v) for m, v in runs.items()}
    base, batched, unshared, reference = (best[m] for m in modes)
    return {"documents": docs, "rounds": rounds, "docs_per_s": {m: [round(x, 2) for x in v] for m, v in runs.items()},
            "best": {m: round(x, 2) for m, x in best.items()}, "ratio": round(batched / base, 2),
            "ratio_unshared": round(unshared / base, 2), "ratio_reference": round(batched / reference, 2)}


def _torch_threads(batched: bool, one_thread: bool = False) -> None:
    """This process plays both workers: torch's threads as the default worker has them (torch's default)
    for one at a time, as a threads worker sets them (documents/batched.py) for the batched mode;
    ``one_thread``: the reference mode, one at a time on one torch thread."""
    import torch

    from aitasks.documents.batched import parallel_calls
    from aitasks.worker.batching import set_jobs_in_process

    if not _torch_default:
        _torch_default.append(torch.get_num_threads())
    set_jobs_in_process(THREADS if batched else 1)
    if batched:
        parallel_calls()
    else:
        torch.set_num_threads(1 if one_thread else _torch_default[0])


def _ingest_all(store: Any, embedder: Any, docs: list[tuple[str, str, bytes]], batched: bool,
                one_thread: bool = False) -> None:
    """``docs``: (document id, file name, bytes), made before the clock starts."""
    from aitasks.documents.batched import BatchedEncode
    from aitasks.documents.pipeline import ingest_document

    _torch_threads(batched, one_thread)
    if not batched:
        for document_id, filename, data in docs:
            ingest_document(store, embedder, TENANT, document_id, data, filename=filename)
        return
    todo: queue.Queue[tuple[str, str, bytes]] = queue.Queue()
    for doc in docs:
        todo.put(doc)
    errors: list[BaseException] = []

    def work() -> None:
        while True:
            try:
                document_id, filename, data = todo.get_nowait()
            except queue.Empty:
                return
            try:
                with BatchedEncode() as encode:
                    ingest_document(store, embedder, TENANT, document_id, data, filename=filename, encode=encode,
                                    write=encode.write)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def in_process_part(docs: int, rounds: int) -> dict[str, Any]:
    """The pipeline alone, no service: ``docs`` one-page PDFs through ``ingest_document`` one at a time
    (the embedder's own call) and by 8 threads through the batched step, into one LanceDB folder; rounds
    alternate the order; best of each."""
    from aitasks.documents.batched import embed_chunks
    from aitasks.documents.embedding import load_embedder
    from aitasks.documents.lancedb_store import LanceDBStore
    embedder = load_embedder()
    embed_chunks(["warm"])
    runs: dict[str, list[float]] = {"one at a time": [], "batched, 8 threads": [], IN_PROCESS_REFERENCE: []}
    with tempfile.TemporaryDirectory(prefix="aitasks-bench-batching-") as tmp:
        store = LanceDBStore(Path(tmp) / "vectors", dimension=embedder.dimension)
        for i in range(rounds):
            for mode in (list(runs) if i % 2 == 0 else list(reversed(runs))):
                batch = [(f"{mode[:3]}{i}-{n}", name, data)
                         for n, (name, data) in enumerate(one_page_pdfs(docs, f"{mode[:3]}{i}"))]
                started = time.perf_counter()
                _ingest_all(store, embedder, batch, mode == "batched, 8 threads", mode == IN_PROCESS_REFERENCE)
                runs[mode].append(round(docs / (time.perf_counter() - started), 2))
    best = {m: max(v) for m, v in runs.items()}
    return {"documents": docs, "docs_per_s": runs, "best": best,
            "ratio": round(best["batched, 8 threads"] / best["one at a time"], 2),
            "ratio_reference": round(best["batched, 8 threads"] / best[IN_PROCESS_REFERENCE], 2)}


def quality_part() -> dict[str, Any]:
    from aitasks.documents.batched import embed_chunks
    from aitasks.documents.embedding import load_embedder
    from aitasks.documents.lancedb_store import LanceDBStore
    from bench import search_corpus, search_tuning_set
    from bench.search_corpus import document_bytes
    from bench.search_set import hits_rows, metrics, rank_of

    embedder = load_embedder()
    out: dict[str, Any] = {}
    for set_name, mod in (("held-out", search_corpus), ("tuning", search_tuning_set)):
        ranks: dict[str, list[int | None]] = {}
        vectors: dict[str, dict[str, np.ndarray]] = {}
        batches_before = embed_chunks.batcher().stats.batches
        for mode in ("one at a time", "batched"):
            with tempfile.TemporaryDirectory(prefix="aitasks-bench-batching-") as tmp:
                store = LanceDBStore(Path(tmp) / "vectors", dimension=embedder.dimension)
                files = [(doc.document_id, doc.filename, document_bytes(doc)) for doc in mod.DOCUMENTS]
                _ingest_all(store, embedder, files, mode == "batched")
                vectors[mode] = {r["id"]: np.asarray(r["vector"], dtype=np.float32)
                                 for r in store._table.to_arrow().to_pylist()}
                ranks[mode] = [rank_of(q, hits_rows(store.search(TENANT, embedder.encode_query(q.text), q.text,
                                                                 top_k=10))) for q in mod.QUESTIONS]
        a, b = vectors["one at a time"], vectors["batched"]
        out[set_name] = {
            "questions": len(mod.QUESTIONS), "chunks": len(a), "same_chunks": sorted(a) == sorted(b),
            "max_abs_vector_diff": float(max(np.max(np.abs(a[k] - b[k])) for k in a)),
            "same_ranks": ranks["one at a time"] == ranks["batched"],
            "batches": embed_chunks.batcher().stats.batches - batches_before,
            **{mode: {k: v for k, v in metrics(r).items() if k in ("hit@1", "mrr")} for mode, r in ranks.items()}}
    out["batch_sizes"] = embed_chunks.batcher().stats.as_dict()["sizes"]
    return out


def run(root: Path, cleanup: Cleanup, quick: bool = False) -> dict[str, Any]:
    docs, rounds = (50, 1) if quick else (50, 2)
    return {"service": service_part(root, cleanup, docs, rounds), "in_process": in_process_part(docs, rounds + 1),
            "quality": quality_part()}


def render(result: dict[str, Any]) -> str:
    s = result["service"]
    lines = [f"  (d'') {s['documents']} one-page PDFs as one batch through the service, best of {s['rounds']}:"]
    lines += [f"        {mode}: {rate:.2f} documents/s (rounds {s['docs_per_s'][mode]})" for mode, rate in s["best"].items()]
    lines.append(f"        batched / one at a time = {s['ratio']:.2f}x; jobs side by side without shared calls / one at "
                 f"a time = {s['ratio_unshared']:.2f}x; batched / the one-thread reference = {s['ratio_reference']:.2f}x")
    if "in_process" in result:
        p = result["in_process"]
        lines.append(f"        in-process pipeline, {p['documents']} documents: one at a time {p['best']['one at a time']:.2f}"
                     f" documents/s (rounds {p['docs_per_s']['one at a time']}), batched by 8 threads "
                     f"{p['best']['batched, 8 threads']:.2f} (rounds {p['docs_per_s']['batched, 8 threads']}) = "
                     f"{p['ratio']:.2f}x; the one-thread reference {p['best'][IN_PROCESS_REFERENCE]:.2f} (rounds "
                     f"{p['docs_per_s'][IN_PROCESS_REFERENCE]}): batched / reference = {p['ratio_reference']:.2f}x")
    for set_name, q in result["quality"].items():
        if set_name == "batch_sizes":
            continue
        lines.append(f"        {set_name} set ({q['questions']} questions, {q['chunks']} chunks): one at a time "
                     f"hit@1 {q['one at a time']['hit@1']:.2f} MRR {q['one at a time']['mrr']:.2f}; batched hit@1 "
                     f"{q['batched']['hit@1']:.2f} MRR {q['batched']['mrr']:.2f}; same ranks {q['same_ranks']}; "
                     f"max |vector diff| {q['max_abs_vector_diff']:.1e}; {q['batches']} model calls")
    lines.append(f"        batch sizes in-process (size: calls): {result['quality']['batch_sizes']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv is None and sys.argv[1:] == ["--in-process"]:  # part 2 alone: no service started
        print(in_process_part(50, 3))
        return 0
    quick = quick_flag("python -m bench.documents_batching_bench", __doc__, argv, "one round each instead of two")
    return in_temp_folder("aitasks-bench-batching-", lambda root, cleanup: render(run(root, cleanup, quick)))


if __name__ == "__main__":
    sys.exit(main())
