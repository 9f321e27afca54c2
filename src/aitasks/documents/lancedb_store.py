"""The embedded default store: LanceDB, one table of chunks in a folder (``var/vectors`` by default).

No server: every process (API, workers) opens the folder itself; reads check for the latest version
on every query, so a search sees a worker's write at once. LanceDB commits are atomic but optimistic:
two concurrent merge_inserts of one document can both commit and leave a mix of two runs' chunks
(seen here about once in ten runs of four processes), so writes take a file lock in the folder: one
writer at a time on this machine, which is the embedded store's scope. Filters are DataFusion SQL built only from values the base class checked (see ``store``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]

from aitasks.documents.errors import InvalidStoreArgument
from aitasks.documents.store import (
    Candidate,
    DocumentSummary,
    DocumentWrite,
    Scalar,
    StoredChunk,
    VectorStore,
    metadata_tags,
)


def _schema(dimension: int) -> pa.Schema:
    return pa.schema([
        pa.field("id", pa.string(), nullable=False),  # tenant/document_id/chunk_index: the merge key
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("document_id", pa.string(), nullable=False),
        pa.field("chunk_index", pa.int32(), nullable=False),
        pa.field("page", pa.int32()),
        pa.field("text", pa.string(), nullable=False),
        pa.field("filename", pa.string()),
        pa.field("metadata", pa.string()),  # JSON, returned as is
        pa.field("tags", pa.list_(pa.string())),  # key=<hash of value>: what filters match
        pa.field("vector", pa.list_(pa.float32(), dimension)),
    ])


def _quote(value: str) -> str:
    # Values reaching here were checked to hold no quote; doubling any that did is the SQL rule anyway.
    return "'" + value.replace("'", "''") + "'"


class LanceDBStore(VectorStore):
    def __init__(self, path: str | Path, dimension: int = 384, table_name: str = "chunks", *,
                 optimize_every: int = 100, keep_versions: timedelta = timedelta(hours=1)) -> None:
        import lancedb

        # Every write adds a table version and small files: without compaction and pruning the folder
        # grows without bound and reads slow down. So every ``optimize_every`` writes of this process
        # (0: never) run optimize(), keeping versions younger than ``keep_versions`` for readers in
        # other processes still on an older one.
        self.optimize_every = optimize_every
        self.keep_versions = keep_versions
        self._writes = 0
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.dimension = dimension
        # interval 0: check for a newer table version before every read (writes come from other processes).
        self._db = lancedb.connect(str(self.path), read_consistency_interval=timedelta(0))
        self._table = self._open_or_create(table_name)

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        # flock is per open file, so threads of one process exclude each other too; it ends with the process.
        with open(self.path / ".write.lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _open_or_create(self, name: str) -> Any:
        try:
            table = self._db.open_table(name)
        except (FileNotFoundError, ValueError):
            with self._write_lock():  # several workers starting at once: one creates, the others open
                table = self._db.create_table(name, schema=_schema(self.dimension), exist_ok=True)
        size = getattr(table.schema.field("vector").type, "list_size", None)
        if size != self.dimension:
            raise InvalidStoreArgument(
                f"The vector table in {self.path} holds {size}-dimension vectors, not {self.dimension}: "
                "a different embedding model needs a new folder (or re-ingesting every document).")
        if not self._has_fts(table):
            from lancedb.index import FTS

            with self._write_lock():
                if not self._has_fts(table):
                    # Rows added after the index was built are still searched (unindexed rows are
                    # scanned); optimize() folds them in.
                    table.create_index("text", config=FTS(), replace=True)
        return table

    @staticmethod
    def _has_fts(table: Any) -> bool:
        return any(index.index_type == "FTS" for index in table.list_indices())

    # --- writes -----------------------------------------------------------------------------------

    def _replace(self, tenant: str, document_id: str, chunks: Sequence[StoredChunk], filename: str | None,
                 metadata: dict[str, Scalar]) -> int:
        return self._replace_many([DocumentWrite(tenant, document_id, chunks, filename, metadata)])[0]

    def _replace_many(self, writes: Sequence[DocumentWrite]) -> list[int]:
        rows = pa.Table.from_pylist([row for w in writes for row in self._rows(w)], schema=self._table.schema)
        by_tenant: dict[str, list[str]] = {}
        for w in writes:
            by_tenant.setdefault(w.tenant, []).append(w.document_id)
        others = " OR ".join(f"({self._where(tenant, ids, [])})" for tenant, ids in by_tenant.items())
        # One commit: upsert these runs' chunks and delete the documents' others (a longer earlier run's
        # tail), so a reader never sees a document half replaced or empty. For several documents at once
        # it is one table version and one merge instead of one each (measured ~50 -> ~6 ms a document).
        with self._write_lock():
            (self._table.merge_insert("id")
             .when_matched_update_all()
             .when_not_matched_insert_all()
             .when_not_matched_by_source_delete(others)
             .execute(rows))
            self._after_write()
        return [len(w.chunks) for w in writes]

    @staticmethod
    def _rows(write: DocumentWrite) -> list[dict[str, Any]]:
        """The document's table rows; its metadata serialised once, not once a chunk."""
        metadata = dict(write.metadata or {})
        meta_json, tags = json.dumps(metadata, sort_keys=True), metadata_tags(metadata)
        return [{"id": f"{write.tenant}/{write.document_id}/{c.index}", "tenant": write.tenant,
                 "document_id": write.document_id, "chunk_index": c.index, "page": c.page, "text": c.text,
                 "filename": write.filename, "metadata": meta_json, "tags": tags,
                 "vector": np.asarray(c.vector, dtype=np.float32).tolist()} for c in write.chunks]

    def _delete(self, tenant: str, document_id: str) -> int:
        where = self._where(tenant, [document_id], [])
        with self._write_lock():
            count = int(self._table.count_rows(where))
            if count:
                self._table.delete(where)
                self._after_write()
        return count

    def _after_write(self) -> None:
        """Called under the write lock after each write: optimize every ``optimize_every`` of them."""
        self._writes += 1
        if self.optimize_every and self._writes % self.optimize_every == 0:
            self._table.optimize(cleanup_older_than=self.keep_versions)

    def optimize(self) -> None:
        """Compact files, fold new rows into the full-text index, drop versions older than keep_versions."""
        with self._write_lock():
            self._table.optimize(cleanup_older_than=self.keep_versions)

    # --- reads ------------------------------------------------------------------------------------

    @staticmethod
    def _where(tenant: str, document_ids: Sequence[str] | None, tags: Sequence[str]) -> str:
        clauses = [f"tenant = {_quote(tenant)}"]  # always first, always there
        if document_ids is not None:
            clauses.append(f"document_id IN ({', '.join(_quote(d) for d in document_ids)})")
        clauses.extend(f"array_has(tags, {_quote(tag)})" for tag in tags)
        return " AND ".join(clauses)

    def _vector_candidates(self, tenant: str, vector: np.ndarray, limit: int, document_ids: list[str] | None,
                           tags: list[str]) -> list[Candidate]:
        query = (self._table.search(vector.tolist(), vector_column_name="vector")
                 .distance_type("cosine")
                 .where(self._where(tenant, document_ids, tags), prefilter=True)
                 .limit(limit))
        return [self._candidate(row) for row in query.to_arrow().to_pylist()]

    def _keyword_candidates(self, tenant: str, text: str, limit: int, document_ids: list[str] | None,
                            tags: list[str]) -> list[Candidate]:
        from lancedb.query import MatchQuery

        # A MatchQuery is tokenized like the index, never parsed: quotes or AND/OR in a question are words.
        # The prefilter keeps other tenants' rows out of the results; BM25's term statistics are the
        # table's, a ranking nuance that reveals no row (scores are normalised per query in fuse()).
        match = MatchQuery(text, "text")  # type: ignore[call-arg]  # pydantic defaults the rest
        query = (self._table.search(match, query_type="fts")
                 .where(self._where(tenant, document_ids, tags), prefilter=True)
                 .limit(limit))
        return [self._candidate(row, bm25=float(row.get("_score") or 0.0)) for row in query.to_arrow().to_pylist()]

    @staticmethod
    def _candidate(row: dict[str, Any], bm25: float = 0.0) -> Candidate:
        return Candidate(document_id=row["document_id"], chunk_index=int(row["chunk_index"]), text=row["text"],
                         page=row["page"], filename=row["filename"], metadata=json.loads(row["metadata"] or "{}"),
                         vector=np.asarray(row["vector"], dtype=np.float32), bm25=bm25)

    def _count(self, tenant: str, document_id: str | None) -> int:
        return int(self._table.count_rows(self._where(tenant, [document_id] if document_id else None, [])))

    def _list(self, tenant: str) -> list[DocumentSummary]:
        where = self._where(tenant, None, [])
        total = int(self._table.count_rows(where))
        if not total:
            return []
        rows = (self._table.search().where(where).select(["document_id", "filename", "page", "metadata"])
                .limit(total).to_arrow().to_pylist())
        docs: dict[str, dict[str, Any]] = {}
        for row in rows:
            doc = docs.setdefault(row["document_id"], {"filename": row["filename"], "metadata": row["metadata"],
                                                       "chunks": 0, "pages": set()})
            doc["chunks"] += 1
            if row["page"] is not None:
                doc["pages"].add(row["page"])
        return [DocumentSummary(doc_id, d["filename"], d["chunks"], sorted(d["pages"]), json.loads(d["metadata"] or "{}"))
                for doc_id, d in sorted(docs.items())]
