"""Search quality on a small labelled set: vector-only, keyword-only (BM25) and the store's hybrid search.

    .venv/bin/python -m bench.search_set            # about 20 s (model load, 6 documents, 36 questions)
    .venv/bin/python -m bench.run_all --only search # the same, inside `make bench`

The six documents and 36 questions of ``bench/search_corpus.py`` go through the real pipeline
(``ingest_document``: extract, OCR of the scanned page, chunk, embed) into an embedded LanceDB store in a
temporary folder (removed at the end). Then each question is asked three ways, top 10:

- vector: ``store.search(..., alpha=1.0)``: cosine similarity of the question's embedding only;
- keyword: the backend's BM25 candidates alone (``_keyword_candidates``, LanceDB's full-text index), in
  BM25 order: what keywords find without the vector;
- hybrid: ``store.search(...)`` with its default weights, as the API will call it.

A result is right when it is a chunk of the labelled document, on the labelled page, holding the labelled
fragment of the answering sentence. Reported: hit@1, hit@3 and MRR@10 (a question answered at rank r
counts 1/r; not in the top 10 counts 0), overall and by kind of question. The whole set is asked twice:
as ingested (rows added after the full-text index was made are scanned, not indexed), and after
``optimize()`` folds them into the index.

For information only, not used to set anything: hybrid at other values of alpha, and reciprocal rank
fusion of the same candidate lists. They are measured on the same 36 questions, so the best of them is
an optimistic estimate; a weight should be chosen on questions this set does not hold.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.search_corpus import DOCUMENTS, QUESTIONS, Question, document_bytes

TENANT = "bench"
TOP_K = 10
POOL = 40  # candidates per method for RRF: what store.search() takes for top_k <= 10
RRF_K = 60  # the constant of Cormack et al. (2009)
ALPHAS = [0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
_WS = re.compile(r"\s+")

Row = tuple[str, int | None, str]  # document_id, page, text


def _norm(text: str) -> str:
    return _WS.sub(" ", text).strip().lower()


def is_answer(q: Question, row: Row) -> bool:
    document_id, page, text = row
    return document_id == q.document_id and page == q.page and _norm(q.answer) in _norm(text)


def rank_of(q: Question, rows: Sequence[Row]) -> int | None:
    """1-based rank of the first right result, None if none of ``rows`` is right."""
    return next((i for i, row in enumerate(rows, start=1) if is_answer(q, row)), None)


def metrics(ranks: Sequence[int | None]) -> dict[str, float]:
    n = len(ranks)
    return {
        "hit@1": round(sum(1 for r in ranks if r == 1) / n, 3),
        "hit@3": round(sum(1 for r in ranks if r is not None and r <= 3) / n, 3),
        "mrr": round(sum(1 / r for r in ranks if r is not None) / n, 3),
    }


def _rrf(by_vector: Sequence[Any], by_keyword: Sequence[Any], top_k: int) -> list[Row]:
    scores: dict[tuple[str, int], float] = {}
    rows: dict[tuple[str, int], Row] = {}
    for ranked in (by_vector, by_keyword):
        for rank, cand in enumerate(ranked, start=1):
            key = (cand.document_id, cand.chunk_index)
            scores[key] = scores.get(key, 0.0) + 1.0 / (RRF_K + rank)
            rows[key] = (cand.document_id, cand.page, cand.text)
    order = sorted(scores, key=lambda k: (-scores[k], k))
    return [rows[k] for k in order[:top_k]]


def hits_rows(hits: Sequence[Any]) -> list[Row]:
    return [(h.document_id, h.page, h.text) for h in hits]


def _ask(store: Any, embedder: Any, vectors: dict[str, Any], extras: bool = True) -> dict[str, Any]:
    """Every question through every method: ranks, per-method metrics and per-query times."""
    methods: dict[str, Callable[[Question], list[Row]]] = {
        "vector": lambda q: hits_rows(store.search(TENANT, vectors[q.text], None, top_k=TOP_K, alpha=1.0)),
        "keyword": lambda q: hits_rows(store._keyword_candidates(TENANT, q.text, TOP_K, None, [])),
        "hybrid": lambda q: hits_rows(store.search(TENANT, vectors[q.text], q.text, top_k=TOP_K)),
    }
    ranks: dict[str, list[int | None]] = {}
    times_ms: dict[str, float] = {}
    for name, method in methods.items():
        method(QUESTIONS[0])  # warm
        ranks[name], took = [], []
        for q in QUESTIONS:
            started = time.perf_counter()
            rows = method(q)
            took.append((time.perf_counter() - started) * 1000)
            ranks[name].append(rank_of(q, rows))
        times_ms[name] = round(statistics.median(took), 2)
    kinds = sorted({q.kind for q in QUESTIONS})
    out: dict[str, Any] = {
        "methods": {name: metrics(r) for name, r in ranks.items()},
        "by_kind": {kind: {name: metrics([r for r, q in zip(rs, QUESTIONS, strict=True) if q.kind == kind])
                           for name, rs in ranks.items()} for kind in kinds},
        "median_query_ms": times_ms,
        "ranks": ranks,
    }
    if not extras:
        return out
    # information only: other weights, and reciprocal rank fusion of the same candidate lists
    sweep = {}
    for alpha in ALPHAS:
        sweep[f"{alpha:.1f}"] = metrics([rank_of(q, hits_rows(store.search(
            TENANT, vectors[q.text], q.text, top_k=TOP_K, alpha=alpha))) for q in QUESTIONS])
    rrf = metrics([rank_of(q, _rrf(store._vector_candidates(TENANT, vectors[q.text], POOL, None, []),
                                   store._keyword_candidates(TENANT, q.text, POOL, None, []), TOP_K))
                   for q in QUESTIONS])
    return {**out, "alpha_sweep": sweep, "rrf": rrf}


CONFIGS = [(200, 40), (80, 16)]  # (chunk_tokens, overlap_tokens): the pipeline's default, and small chunks


def _one_config(embedder: Any, chunk_tokens: int, overlap_tokens: int) -> dict[str, Any]:
    from aitasks.documents.lancedb_store import LanceDBStore
    from aitasks.documents.pipeline import ingest_document

    with tempfile.TemporaryDirectory(prefix="aitasks-bench-search-") as tmp:
        store = LanceDBStore(Path(tmp) / "vectors", dimension=embedder.dimension)
        documents = {}
        for doc in DOCUMENTS:
            r = ingest_document(store, embedder, TENANT, doc.document_id, document_bytes(doc), filename=doc.filename,
                                chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens)
            documents[doc.document_id] = {"file": doc.filename, "type": r.doc_type, "pages": r.pages,
                                          "ocr_pages": r.ocr_pages, "chunks": r.chunks}
        # Every label must name a chunk that exists, or a miss would be the label's fault, not the search's.
        rows = [(r["document_id"], r["page"], r["text"]) for r in store._table.to_arrow().to_pylist()]
        unanswerable = [q.text for q in QUESTIONS if not any(is_answer(q, row) for row in rows)]
        vectors = {q.text: embedder.encode_query(q.text) for q in QUESTIONS}
        as_ingested = _ask(store, embedder, vectors)
        store.optimize()
        optimized = _ask(store, embedder, vectors, extras=False)
    same = all(as_ingested["ranks"][m] == optimized["ranks"][m] for m in as_ingested["ranks"])
    return {"chunk_tokens": chunk_tokens, "overlap_tokens": overlap_tokens, "documents": documents,
            "chunks": len(rows), "unanswerable_labels": unanswerable, "as_ingested": as_ingested,
            "optimized": optimized, "optimize_changes_ranks": not same}


def run(quick: bool = False) -> dict[str, Any]:
    """Ingest the set into a temporary store per chunk size, ask every question (``quick``: default chunks only)."""
    from aitasks.documents.embedding import load_embedder
    from aitasks.documents.store import DEFAULT_ALPHA

    started = time.perf_counter()
    embedder = load_embedder()
    configs = [_one_config(embedder, c, o) for c, o in (CONFIGS[:1] if quick else CONFIGS)]
    return {
        "questions": len(QUESTIONS), "documents": len(DOCUMENTS),
        "kinds": {kind: sum(1 for q in QUESTIONS if q.kind == kind) for kind in sorted({q.kind for q in QUESTIONS})},
        "top_k": TOP_K, "default_alpha": DEFAULT_ALPHA, "model": embedder.name, "configs": configs,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def render(result: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    add("")
    add(f"search quality: {result['questions']} questions ({', '.join(f'{n} {k}' for k, n in result['kinds'].items())}) "
        f"over {result['documents']} documents ({result['model']}, LanceDB, top {result['top_k']}); "
        f"rankings as ingested (the service's state)")
    for cfg in result["configs"]:
        docs, res = cfg["documents"], cfg["as_ingested"]
        add(f"  chunks of <= {cfg['chunk_tokens']} tokens (overlap {cfg['overlap_tokens']}): {cfg['chunks']} chunks: "
            + "; ".join(f"{d['file']} {d['pages']}p" + (f" ({d['ocr_pages']} OCR)" if d["ocr_pages"] else "")
                        + f" {d['chunks']}ch" for d in docs.values()))
        if cfg["unanswerable_labels"]:
            add(f"    LABELS WITH NO MATCHING CHUNK (a fault of the set, not of search): {cfg['unanswerable_labels']}")
        add(f"    {'':<28}{'hit@1':>7}{'hit@3':>7}{'MRR':>7}{'ms/query':>10}")
        for name, m in res["methods"].items():
            label = name if name != "hybrid" else f"hybrid (alpha {result['default_alpha']})"
            add(f"    {label:<28}{m['hit@1']:>7.2f}{m['hit@3']:>7.2f}{m['mrr']:>7.2f}{res['median_query_ms'][name]:>10.1f}")
        add("    hit@1 by kind (vector / keyword / hybrid): " + "; ".join(
            f"{kind} " + " / ".join(f"{res['by_kind'][kind][n]['hit@1']:.2f}" for n in res["methods"])
            for kind in res["by_kind"]))
        add(f"    after optimize(): rankings {'CHANGED' if cfg['optimize_changes_ranks'] else 'identical'}")
        add("    information only, same questions (optimistic): hybrid hit@1/MRR at alpha "
            + ", ".join(f"{a} {m['hit@1']:.2f}/{m['mrr']:.2f}" for a, m in res["alpha_sweep"].items())
            + f"; RRF k={RRF_K}: {res['rrf']['hit@1']:.2f}/{res['rrf']['mrr']:.2f}")
        misses = [(q.text, [res["ranks"][n][i] for n in res["ranks"]]) for i, q in enumerate(QUESTIONS)
                  if res["ranks"]["hybrid"][i] != 1 or res["ranks"]["vector"][i] != 1]
        if misses:
            add("    not first by vector or hybrid (rank by vector / keyword / hybrid; - = not in top 10):")
            for text, ranks in misses:
                add(f"      {text!r}: " + " / ".join("-" if r is None else str(r) for r in ranks))
    add("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m bench.search_set", description=__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    print(render(run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
