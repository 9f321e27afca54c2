"""The vector store contract, run against both backends: LanceDB in a temporary folder and PostgreSQL with
pgvector on a real server this module starts (tests/pg_server.py). Real embeddings, no mocks."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta
from pathlib import Path

import numpy as np
import psycopg
import pytest

from aitasks.documents.embedding import Embedder, load_embedder
from aitasks.documents.errors import InvalidStoreArgument
from aitasks.documents.lancedb_store import LanceDBStore
from aitasks.documents.pg_store import PgVectorStore
from aitasks.documents.store import DocumentWrite, StoredChunk, VectorStore
from aitasks.documents.vector_stores import open_store
from pg_server import PgServer, running_postgres
from test_documents_pipeline import BEES, EXPENSES, LIGHTHOUSE, SOURDOUGH

pytestmark = pytest.mark.slow  # PostgreSQL

DIM = 384
CORPUS = {  # document id -> paragraphs (one chunk each, page = position + 1)
    "lighthouse": LIGHTHOUSE,
    "expenses": EXPENSES,
    "bees": BEES,
    "sourdough": [SOURDOUGH[:SOURDOUGH.index("Baking the loaf")].strip(),  # heading + paragraph per chunk
                  SOURDOUGH[SOURDOUGH.index("Baking the loaf"):]],
}
PARAPHRASES = [  # (question in other words, document, chunk index)
    ("When did the rock's beacon stop needing people to run it?", "lighthouse", 1),
    ("How much is refunded for a night's accommodation on a business trip?", "expenses", 1),
    ("How do insects let the hive know which way the blossoms are?", "bees", 0),
    ("How long should the bread rest in the fridge before baking?", "sourdough", 1),
]
# Named no identifier, so since issue 22 it is ranked by the vector alone, which puts the right chunk
# second (the old fusion's keyword match on "painted" lifted it first): the price of hybrid never ranking a
# vague question below vector-only search (docs/benchmarks.md, "Search quality").
KEYWORD_HELPED = ("Who painted the tower during a storm?", "lighthouse", 0)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return load_embedder()


@pytest.fixture(scope="module")
def pg() -> Iterator[PgServer]:
    with running_postgres() as server:
        yield server


def new_pg_store(pg: PgServer, dimension: int = DIM) -> PgVectorStore:
    return PgVectorStore(pg.url, dimension=dimension, table=f"t_{uuid.uuid4().hex[:12]}")  # a table per test


@pytest.fixture(params=["lancedb", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    if request.param == "lancedb":
        s: VectorStore = LanceDBStore(tmp_path / "vectors", dimension=DIM)
    else:
        s = new_pg_store(request.getfixturevalue("pg"))
    yield s
    s.close()


def chunks_of(embedder: Embedder, texts: list[str], pages: bool = True) -> list[StoredChunk]:
    vectors = embedder.encode(texts)
    return [StoredChunk(i, t, i + 1 if pages else None, v) for i, (t, v) in enumerate(zip(texts, vectors, strict=True))]


def ingest_corpus(store: VectorStore, embedder: Embedder, tenant: str = "acme") -> None:
    for document_id, paragraphs in CORPUS.items():
        store.replace_document(tenant, document_id, chunks_of(embedder, paragraphs), filename=f"{document_id}.txt",
                               metadata={"topic": document_id, "year": 2026})


def rows(store: VectorStore, tenant: str, document_id: str) -> list[tuple[int, str, int | None]]:
    hits = store.search(tenant, unit(0), None, top_k=100, document_ids=[document_id])
    return sorted((h.chunk_index, h.text, h.page) for h in hits)


def unit(seed: int, dimension: int = DIM) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=dimension).astype(np.float32)
    return vector / np.linalg.norm(vector)


# --- writes -----------------------------------------------------------------------------------------

def test_replace_is_idempotent_and_leaves_no_stale_tail(store: VectorStore, embedder: Embedder) -> None:
    chunks = chunks_of(embedder, LIGHTHOUSE + EXPENSES)
    for _ in range(3):  # a retried job: N runs, one set
        assert store.replace_document("acme", "doc", chunks, filename="doc.pdf") == 4
    assert store.count("acme", "doc") == 4
    assert rows(store, "acme", "doc") == [(c.index, c.text, c.page) for c in chunks]
    store.replace_document("acme", "doc", chunks[:1], filename="doc.pdf")  # a shorter new version
    assert store.count("acme", "doc") == 1 and [r[0] for r in rows(store, "acme", "doc")] == [0]
    assert store.replace_document("acme", "doc", []) == 0 and store.count("acme", "doc") == 0


def test_several_documents_replaced_at_once_each_get_their_own_outcome(store: VectorStore) -> None:
    """The group commit of a threads worker's jobs (documents/batched.py): every document ends as if
    replaced alone (an earlier longer run's tail gone), a bad write fails alone, a document named twice
    ends with its later write; on LanceDB the good ones are one table version, not one each."""
    def doc(seed: int, n: int) -> list[StoredChunk]:
        return [StoredChunk(i, f"text {seed}.{i}", 1, unit(seed * 10 + i)) for i in range(n)]

    store.replace_document("acme", "a", doc(1, 3))  # a's earlier, longer run
    store.replace_document("other", "a", doc(2, 2))  # another tenant's document of the same id
    before = store._table.version if isinstance(store, LanceDBStore) else 0
    bad = [StoredChunk(0, "wrong size", 1, unit(9, DIM + 1))]
    outcomes = store.replace_documents([
        DocumentWrite("acme", "a", doc(3, 1)), DocumentWrite("acme", "b", doc(4, 2), "b.pdf", {"team": "x"}),
        DocumentWrite("acme", "bad", bad), DocumentWrite("beta", "c", doc(5, 1)),
        DocumentWrite("acme", "b", doc(6, 1))])  # b again (uploaded again): the later write wins
    assert outcomes[:2] == [1, 2] and outcomes[3:] == [1, 1], outcomes
    assert isinstance(outcomes[2], InvalidStoreArgument)
    assert store.count("acme", "a") == 1 and rows(store, "acme", "a") == [(0, "text 3.0", 1)]
    assert rows(store, "acme", "b") == [(0, "text 6.0", 1)] and store.count("acme", "bad") == 0
    assert store.count("beta", "c") == 1 and store.count("other", "a") == 2  # the other tenant's a untouched
    if isinstance(store, LanceDBStore):  # a, b, c in one commit; b's second write alone after it
        assert store._table.version == before + 2


def test_delete_removes_all_and_count_and_list(store: VectorStore, embedder: Embedder) -> None:
    ingest_corpus(store, embedder)
    assert store.count("acme") == sum(len(p) for p in CORPUS.values())
    docs = store.list_documents("acme")
    assert [d.document_id for d in docs] == sorted(CORPUS)
    lighthouse = next(d for d in docs if d.document_id == "lighthouse")
    assert (lighthouse.filename, lighthouse.chunks, lighthouse.pages) == ("lighthouse.txt", 2, [1, 2])
    assert lighthouse.metadata == {"topic": "lighthouse", "year": 2026}
    assert store.delete_document("acme", "sourdough") == 2
    assert store.count("acme", "sourdough") == 0 and store.delete_document("acme", "sourdough") == 0
    assert rows(store, "acme", "sourdough") == [] and store.count("acme") == 6
    assert store.list_documents("nobody-here") == []


def test_tenants_are_isolated_on_write_query_and_delete(store: VectorStore, embedder: Embedder) -> None:
    # The same document id in two tenants: each tenant's writes, reads and deletes touch only its own.
    store.replace_document("acme", "handbook", chunks_of(embedder, LIGHTHOUSE), filename="acme.pdf")
    store.replace_document("globex", "handbook", chunks_of(embedder, BEES[:1]), filename="globex.pdf")
    question = "When was the lighthouse automated?"
    vector = embedder.encode_query(question)
    globex = store.search("globex", vector, question, top_k=10)
    assert [h.filename for h in globex] == ["globex.pdf"] and "bees" in globex[0].text.lower()
    assert {h.filename for h in store.search("acme", vector, question, top_k=10)} == {"acme.pdf"}
    assert store.search("initech", vector, question, top_k=10) == []
    store.replace_document("globex", "handbook", chunks_of(embedder, BEES))  # replaces globex's only
    assert (store.count("acme", "handbook"), store.count("globex", "handbook")) == (2, 2)
    assert store.delete_document("globex", "handbook") == 2
    assert store.count("acme", "handbook") == 2 and store.count("globex") == 0
    assert [d.document_id for d in store.list_documents("acme")] == ["handbook"]


def test_document_ids_and_metadata_filters(store: VectorStore, embedder: Embedder) -> None:
    ingest_corpus(store, embedder)
    question = "How much does the company pay for a hotel?"
    vector = embedder.encode_query(question)
    only = store.search("acme", vector, question, 10, document_ids=["bees", "sourdough"])
    assert only and {h.document_id for h in only} == {"bees", "sourdough"}
    assert store.search("acme", vector, question, 10, document_ids=[]) == []
    assert {h.document_id for h in store.search("acme", vector, question, 10, filters={"topic": "bees"})} == {"bees"}
    both = store.search("acme", vector, question, 10, filters={"topic": "expenses", "year": 2026})
    assert {h.document_id for h in both} == {"expenses"} and both[0].chunk_index == 1
    assert store.search("acme", vector, question, 10, filters={"topic": "expenses", "year": 2025}) == []
    assert store.search("acme", vector, question, 10, filters={"year": 2026.0})  # 2026.0 == 2026, as in JSON
    assert store.search("acme", vector, question, 10, filters={"topic": "x' OR '1'='1"}) == []


# --- injection attempts --------------------------------------------------------------------------

@pytest.mark.parametrize("tenant", ["", "a' OR tenant != '", "acme; DROP TABLE chunks", "ac me", "x" * 65, None])
def test_ids_that_could_change_a_query_are_refused(store: VectorStore, tenant: object) -> None:
    vector = unit(1)
    chunk = StoredChunk(0, "text", None, vector)
    for call in (lambda: store.search(tenant, vector, "text"),  # type: ignore[arg-type]
                 lambda: store.replace_document(tenant, "doc", [chunk]),  # type: ignore[arg-type]
                 lambda: store.delete_document(tenant, "doc"),  # type: ignore[arg-type]
                 lambda: store.count(tenant),  # type: ignore[arg-type]
                 lambda: store.list_documents(tenant)):  # type: ignore[arg-type]
        with pytest.raises(InvalidStoreArgument):
            call()
    for bad in ("doc' OR '1'='1", "../doc", "doc/1", "doc; DELETE FROM aitasks_chunks"):
        with pytest.raises(InvalidStoreArgument):
            store.replace_document("acme", bad, [chunk])
        with pytest.raises(InvalidStoreArgument):
            store.search("acme", vector, "text", document_ids=[bad])
    with pytest.raises(InvalidStoreArgument):
        store.search("acme", vector, "text", filters={"a = 1 OR b": "x"})
    with pytest.raises(InvalidStoreArgument):
        store.replace_document("acme", "doc", [StoredChunk(0, "t", None, np.ones(3, dtype=np.float32))])
    assert store.count("acme") == 0


def test_query_text_is_only_words(store: VectorStore, embedder: Embedder) -> None:
    """Keyword syntax and SQL in a question are matched as words: no error, no other tenant's rows."""
    store.replace_document("acme", "orders", chunks_of(embedder, ["Order QX-4471 reached the depot on Tuesday."]))
    store.replace_document("globex", "orders", chunks_of(embedder, ["Globex order QX-4471 left late."]))
    for question in ["QX-4471' OR '1'='1", "QX-4471 & !depot | <-> :* \\ ''", "'); DROP TABLE chunks; --",
                     "\"unclosed phrase QX-4471", "the and of", "!!!"]:
        hits = store.search("acme", embedder.encode_query(question), question, top_k=10)
        assert [h.document_id for h in hits] == ["orders"] and "Globex" not in hits[0].text, question
    assert store.count("acme") == 1 and store.count("globex") == 1


# --- ranking --------------------------------------------------------------------------------------

def test_keyword_score_lifts_the_chunk_naming_a_rare_term(store: VectorStore, embedder: Embedder) -> None:
    texts = ["Order number QX-4471 was delayed by the storm and reached the depot on Tuesday.",
             "Order number QX-4417 was delayed by the storm and reached the depot on Tuesday.",
             "Order number QZ-7144 left the depot on time and arrived on Monday.",
             "Orders delayed by weather are usually delivered to the depot within a few days."]
    store.replace_document("acme", "orders", chunks_of(embedder, texts))
    question = "what happened to QX-4471"
    vector_only = store.search("acme", embedder.encode_query(question), question, top_k=4, alpha=1.0)
    hybrid = store.search("acme", embedder.encode_query(question), question, top_k=4)
    assert hybrid[0].chunk_index == 0 and hybrid[0].keyword_score == 1.0
    assert hybrid[0].score == pytest.approx(0.8 * hybrid[0].vector_score + 0.2)
    assert hybrid[0].score - hybrid[1].score > 2 * (vector_only[0].score - vector_only[1].score)


def test_a_question_naming_no_identifier_is_ranked_as_by_vector_alone(store: VectorStore,
                                                                       embedder: Embedder) -> None:
    """Its common words matching a chunk are no evidence (issue 22): hybrid = vector-only, on both stores."""
    texts = ["Arctic terns live for thirty years or more and fly from pole to pole every year.",
             "The old bridge can still carry heavy lorries, they say, although it was built in 1890.",
             "Sourdough starters get fed with equal weights of flour and water."]
    store.replace_document("acme", "mixed", chunks_of(embedder, texts))
    question = "how old can they get"
    vector = embedder.encode_query(question)
    vector_only = store.search("acme", vector, question, top_k=3, alpha=1.0)
    hybrid = store.search("acme", vector, question, top_k=3)
    assert [(h.chunk_index, h.score) for h in hybrid] == [(h.chunk_index, h.score) for h in vector_only]
    assert all(h.keyword_score == 0.0 and h.score == h.vector_score for h in hybrid)
    keywords_only = store.search("acme", vector, question, top_k=3, alpha=0.0)  # asked for: still keywords
    assert keywords_only[0].keyword_score == 1.0 and keywords_only[0].chunk_index != vector_only[0].chunk_index


def test_small_tenant_in_a_big_table_gets_all_its_rows(store: VectorStore) -> None:
    """A filtered nearest-neighbour query must not come back short (pgvector's HNSW filters after the walk)."""
    rng = np.random.default_rng(7)
    big = rng.normal(size=(3000, DIM)).astype(np.float32)
    big /= np.linalg.norm(big, axis=1, keepdims=True)
    for start in range(0, len(big), 500):
        store.replace_document("big", f"doc{start}", [StoredChunk(i, f"row {start + i}", None, big[start + i])
                                                      for i in range(500)])
    store.replace_document("small", "doc", [StoredChunk(i, f"small {i}", None, unit(100 + i)) for i in range(12)])
    hits = store.search("small", big[0], None, top_k=12)
    assert sorted(h.chunk_index for h in hits) == list(range(12))
    assert [h.vector_score for h in hits] == sorted((h.vector_score for h in hits), reverse=True)
    # A rare metadata value inside the big tenant: the filter is not on an indexed column the planner knows.
    store.replace_document("big", "rare", [StoredChunk(i, f"rare {i}", None, -big[i]) for i in range(12)],
                           metadata={"kind": "rare"})
    hits = store.search("big", big[0], None, top_k=12, filters={"kind": "rare"})
    assert sorted(h.chunk_index for h in hits) == list(range(12))
    assert hits[-1].chunk_index == 0 and hits[-1].vector_score == pytest.approx(-1.0, abs=1e-5)  # the farthest


@pytest.fixture
def both(tmp_path: Path, pg: PgServer, embedder: Embedder) -> Iterator[dict[str, VectorStore]]:
    stores: dict[str, VectorStore] = {"lancedb": LanceDBStore(tmp_path / "vectors", dimension=DIM),
                                      "postgres": new_pg_store(pg)}
    for s in stores.values():
        ingest_corpus(s, embedder)
        ingest_corpus(s, embedder, tenant="globex")  # another tenant's identical rows change nothing
    yield stores
    for s in stores.values():
        s.close()


def test_paraphrased_questions_rank_the_right_chunk_first_on_both(both: dict[str, VectorStore],
                                                                   embedder: Embedder) -> None:
    for question, document_id, chunk_index in PARAPHRASES:
        vector = embedder.encode_query(question)
        results = {name: s.search("acme", vector, question, top_k=5) for name, s in both.items()}
        for name, hits in results.items():
            top = hits[0]
            assert (top.document_id, top.chunk_index) == (document_id, chunk_index), (
                name, question, [(h.document_id, h.chunk_index, round(h.score, 3)) for h in hits])
            assert top.page == chunk_index + 1 and top.filename == f"{document_id}.txt"
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        lance, postgres = results["lancedb"], results["postgres"]
        # The same stored vectors give the same cosine on both backends.
        assert postgres[0].vector_score == pytest.approx(lance[0].vector_score, abs=1e-6)
        vector_only = {name: [(h.document_id, h.chunk_index) for h in s.search("acme", vector, None, top_k=5)]
                       for name, s in both.items()}
        assert vector_only["lancedb"] == vector_only["postgres"], question
    question, document_id, chunk_index = KEYWORD_HELPED
    vector = embedder.encode_query(question)
    ranked = {name: [(h.document_id, h.chunk_index) for h in s.search("acme", vector, question, top_k=5)]
              for name, s in both.items()}
    assert ranked["lancedb"] == ranked["postgres"] and ranked["lancedb"][1] == (document_id, chunk_index), ranked


# --- concurrency, processes and the server backend's own behaviour ----------------------------------

def _replace_repeatedly(location: str, run: int, chunks: int, table: str | None) -> None:
    """One 'worker' process: replaces the same document again and again with its own set of chunks."""
    store: VectorStore = (PgVectorStore(location, dimension=8, table=table) if table
                          else LanceDBStore(location, dimension=8))
    for round_ in range(15):
        store.replace_document("acme", "doc", [StoredChunk(i, f"run{run} chunk{i}", 1, unit(run * 1000 + round_ * 10 + i, 8))
                                               for i in range(chunks)])
    store.close()


def _check_one_whole_set(store: VectorStore, sizes: dict[int, int]) -> None:
    hits = store.search("acme", unit(0, 8), None, top_k=100)
    runs = {h.text.split()[0] for h in hits}
    assert len(runs) == 1, sorted(h.text for h in hits)  # never a mix of two runs
    run = int(runs.pop().removeprefix("run"))
    assert sorted(h.chunk_index for h in hits) == list(range(sizes[run])) and store.count("acme", "doc") == sizes[run]


@pytest.mark.parametrize("backend", ["lancedb", "postgres"])
def test_concurrent_replaces_from_processes_leave_one_whole_set(backend: str, tmp_path: Path,
                                                                 request: pytest.FixtureRequest) -> None:
    sizes = {1: 6, 2: 4, 3: 5, 4: 7}
    if backend == "postgres":
        location, table = request.getfixturevalue("pg").url, f"t_{uuid.uuid4().hex[:12]}"
    else:
        location, table = str(tmp_path / "vectors"), None
    with ProcessPoolExecutor(len(sizes), mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_replace_repeatedly, [location] * len(sizes), list(sizes), list(sizes.values()),
                      [table] * len(sizes)))
    store: VectorStore = PgVectorStore(location, dimension=8, table=table) if table else LanceDBStore(location, 8)
    _check_one_whole_set(store, sizes)
    store.close()


_FORKED: PgVectorStore | None = None


def _replace_in_forked_child(run: int, chunks: int) -> int:
    assert _FORKED is not None
    for round_ in range(15):
        _FORKED.replace_document("acme", "doc", [StoredChunk(i, f"run{run} chunk{i}", 1, unit(run + round_ + i, 8))
                                                 for i in range(chunks)])
    return _backend_pid(_FORKED)


def test_forked_workers_open_their_own_connections(pg: PgServer) -> None:
    """Celery's prefork: the parent used the store, then forked. A child reusing the parent's socket would
    interleave protocol messages; each must open its own pool, and the parent's must still work."""
    global _FORKED
    _FORKED = PgVectorStore(pg.url, dimension=8, table=f"t_{uuid.uuid4().hex[:12]}")
    try:
        _FORKED.replace_document("acme", "doc", [StoredChunk(0, "run0 chunk0", 1, unit(0, 8))])
        parent_pool, parent_backend = _FORKED._pool, _backend_pid(_FORKED)
        sizes = {1: 3, 2: 5, 3: 4}
        with ProcessPoolExecutor(len(sizes), mp_context=multiprocessing.get_context("fork")) as pool:
            child_backends = set(pool.map(_replace_in_forked_child, list(sizes), list(sizes.values())))
        assert child_backends and parent_backend not in child_backends
        assert _FORKED._pool is parent_pool and _FORKED.count("acme", "doc") in sizes.values()  # parent still works
        _check_one_whole_set(_FORKED, sizes)
    finally:
        _FORKED.close()
        _FORKED = None


def _backend_pid(store: PgVectorStore) -> int:
    with store._connection() as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def test_schema_is_created_once_with_its_indexes_and_checks_the_dimension(pg: PgServer) -> None:
    table = f"t_{uuid.uuid4().hex[:12]}"
    first, second = PgVectorStore(pg.url, 8, table=table), PgVectorStore(pg.url, 8, table=table)
    first.replace_document("acme", "doc", [StoredChunk(0, "a lighthouse", None, unit(1, 8))])
    assert second.count("acme") == 1  # the second opener finds the table the first made
    with psycopg.connect(pg.url) as conn:
        indexes = {r[0] for r in conn.execute("SELECT indexdef FROM pg_indexes WHERE tablename = %s", (table,))}
    assert any("USING hnsw (embedding vector_cosine_ops)" in i for i in indexes), indexes
    assert any("USING gin (tsv)" in i for i in indexes) and any("USING gin (tags)" in i for i in indexes)
    assert any("(tenant, document_id, chunk_index)" in i for i in indexes)
    with first._connection() as conn:  # the pool's session settings reached pgvector
        assert conn.execute("SHOW hnsw.iterative_scan").fetchone() == ("strict_order",)
        assert conn.execute("SHOW hnsw.ef_search").fetchone() == ("400",)
    wrong = PgVectorStore(pg.url, 16, table=table)
    with pytest.raises(InvalidStoreArgument, match="vector\\(8\\)"):
        wrong.count("acme")
    assert wrong._pool is None  # closed at once: no pool threads left for the garbage collector to stop
    with pytest.raises(InvalidStoreArgument):
        PgVectorStore(pg.url, 8, table="chunks; DROP TABLE x")
    for s in (first, second):
        s.close()


def test_open_store_picks_the_backend_by_url(pg: PgServer, tmp_path: Path) -> None:
    for url in (pg.url, pg.url.replace("postgresql://", "postgres://")):
        s = open_store(url, 8)
        assert isinstance(s, PgVectorStore) and s.count("acme") == 0
        s.close()
    assert isinstance(open_store(str(tmp_path / "v"), 8), LanceDBStore)
    assert isinstance(open_store(f"lancedb://{tmp_path / 'w'}", 8), LanceDBStore)
    with pytest.raises(InvalidStoreArgument):
        open_store("mysql://x", 8)


def test_lancedb_compacts_and_prunes_every_n_writes(tmp_path: Path) -> None:
    """Each write adds a table version: a store that optimizes every few writes keeps the folder bounded,
    one that never does accumulates every version."""
    chunk = [StoredChunk(0, "a lighthouse on a rock", None, unit(1, 8))]
    pruned = LanceDBStore(tmp_path / "pruned", 8, optimize_every=5, keep_versions=timedelta(milliseconds=1))
    kept = LanceDBStore(tmp_path / "kept", 8, optimize_every=0)
    for i in range(20):
        for store in (pruned, kept):
            store.replace_document("acme", f"doc{i % 3}", chunk)
    assert pruned.count("acme") == kept.count("acme") == 3
    assert len(pruned._table.list_versions()) < 10 <= len(kept._table.list_versions())
    assert pruned.search("acme", unit(1, 8), "lighthouse", 3)  # still answers after pruning
