"""The server backend: PostgreSQL with pgvector, for deployments that outgrow one machine.

One table of chunks (``aitasks_chunks`` by default), created on first use with an HNSW index (cosine)
on the vectors, a GIN index on a generated ``tsvector`` of the text (English stemming), a GIN index on the
metadata tags, and the primary key (tenant, document_id, chunk_index) as the btree that serves every
per-tenant and per-document lookup. Every statement binds its values as parameters; the only things
composed into SQL are the table and index names, checked identifiers quoted by ``psycopg.sql``.

Scores match the LanceDB backend's so ``fuse`` ranks alike: the vector score is the cosine (computed
by ``fuse`` from the stored vector, identical on both), the keyword score is Okapi BM25 (k1 1.2,
b 0.75) over the rows the search covers (the tenant's, after its filters), which ``fuse`` normalises
by the query's best.

Connections: a small pool per process, opened lazily and reopened when the pid changes, since Celery's
prefork workers fork after the parent may have used the store and a libpq socket must never be shared
across a fork.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from aitasks.documents.errors import InvalidStoreArgument
from aitasks.documents.store import Candidate, DocumentSummary, Scalar, StoredChunk, VectorStore, metadata_tags

TABLE_RE = re.compile(r"[a-z_][a-z0-9_]{0,40}")
BM25_K1 = 1.2
BM25_B = 0.75
_ABANDONED: list[ConnectionPool[Any]] = []  # pools inherited over a fork: kept, never closed from the child


def to_pgvector(vector: np.ndarray) -> str:
    """pgvector's text input; Python floats print the float32 values exactly, so they read back bit-equal."""
    return "[" + ",".join(map(repr, np.asarray(vector, dtype=np.float32).tolist())) + "]"


def from_vector_send(data: bytes) -> np.ndarray:
    """pgvector's binary form (``vector_send``): int16 dimension, int16 unused, big-endian float32s.
    Forty times faster to read than the text form, which a search reads 40+ rows of."""
    dimension = int.from_bytes(data[:2], "big")
    return np.frombuffer(data, dtype=">f4", count=dimension, offset=4).astype(np.float32)


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Session settings, once per pooled connection. HNSW filters after it walks the graph: without an
    iterative scan a small tenant's query in a big table comes back with fewer rows than asked;
    strict_order keeps the exact distance order, ef_search covers the largest candidate pool (400)."""
    conn.autocommit = True
    conn.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', false), "
                 "set_config('hnsw.ef_search', '400', false)")
    conn.autocommit = False


class PgVectorStore(VectorStore):
    def __init__(self, url: str, dimension: int = 384, table: str = "aitasks_chunks", max_connections: int = 4) -> None:
        if not TABLE_RE.fullmatch(table):
            raise InvalidStoreArgument(f"Invalid table name {table!r}: lowercase letters, digits and '_'.")
        self.url = url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url
        self.dimension = dimension
        self.table = table
        self.max_connections = max_connections
        self._pool: ConnectionPool[Any] | None = None
        self._pool_pid = 0
        self._lock = threading.Lock()
        self._schema_ready = False
        self._t = sql.Identifier(table)

    # --- connections ------------------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of this process's pool inside one transaction (committed on success)."""
        pool = self._get_pool()
        with pool.connection() as conn:
            yield conn

    def _get_pool(self) -> ConnectionPool[Any]:
        with self._lock:
            if self._pool is None or self._pool_pid != os.getpid():
                if self._pool is not None:
                    _ABANDONED.append(self._pool)  # the parent's: closing it here would end its sessions
                # check: a session the server dropped (restart, failover, idle timeout) is replaced
                # before use instead of failing the job that drew it.
                self._pool = ConnectionPool(self.url, min_size=1, max_size=self.max_connections, open=True,
                                            name=f"aitasks-{self.table}", configure=_configure,
                                            check=ConnectionPool.check_connection)
                self._pool_pid = os.getpid()
            pool = self._pool
        if not self._schema_ready:
            try:
                self._ensure_schema(pool)
            except BaseException:
                self.close()  # a store that cannot be set up (wrong dimension, no rights) keeps no pool threads
                raise
        return pool

    def close(self) -> None:
        with self._lock:
            if self._pool is not None and self._pool_pid == os.getpid():
                self._pool.close()
            self._pool = None

    # --- schema -----------------------------------------------------------------------------------

    def _ensure_schema(self, pool: ConnectionPool[Any]) -> None:
        name = self.table
        statements = [
            sql.SQL("CREATE EXTENSION IF NOT EXISTS vector"),
            sql.SQL("""CREATE TABLE IF NOT EXISTS {t} (
                tenant text NOT NULL,
                document_id text NOT NULL,
                chunk_index integer NOT NULL,
                page integer,
                text text NOT NULL,
                filename text,
                metadata jsonb NOT NULL DEFAULT '{{}}',
                tags text[] NOT NULL DEFAULT '{{}}',
                embedding vector({dim}) NOT NULL,
                tsv tsvector GENERATED ALWAYS AS (to_tsvector('english'::regconfig, text)) STORED,
                PRIMARY KEY (tenant, document_id, chunk_index))""").format(
                t=self._t, dim=sql.Literal(self.dimension)),
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING hnsw (embedding vector_cosine_ops)").format(
                i=sql.Identifier(f"{name}_embedding_hnsw"), t=self._t),
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING gin (tsv)").format(
                i=sql.Identifier(f"{name}_tsv_gin"), t=self._t),
            sql.SQL("CREATE INDEX IF NOT EXISTS {i} ON {t} USING gin (tags)").format(
                i=sql.Identifier(f"{name}_tags_gin"), t=self._t),
        ]
        with pool.connection() as conn, conn.transaction():
            # Workers starting together: IF NOT EXISTS is not safe against a concurrent CREATE, a lock is.
            conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"aitasks-schema:{name}",))
            for statement in statements:
                conn.execute(statement)
            row = conn.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = to_regclass(%s) AND attname = 'embedding'",
                (sql.Identifier(name).as_string(conn),)).fetchone()
        expected = f"vector({self.dimension})"
        if row is None or row[0] != expected:
            raise InvalidStoreArgument(
                f"The table {name} holds {row[0] if row else 'no'} vectors, not {expected}: a different embedding "
                "model needs another table (or re-ingesting every document).")
        self._schema_ready = True

    # --- writes -----------------------------------------------------------------------------------

    def _lock_document(self, conn: psycopg.Connection[Any], tenant: str, document_id: str) -> None:
        # Serialises writers of one document until commit; the id cannot hold '/', so the key is unambiguous.
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                     (f"{self.table}/{tenant}/{document_id}",))

    def _replace(self, tenant: str, document_id: str, chunks: Sequence[StoredChunk], filename: str | None,
                 metadata: dict[str, Scalar]) -> int:
        meta_json = json.dumps(metadata, sort_keys=True)
        tags = metadata_tags(metadata)
        copy_sql = sql.SQL("COPY {t} (tenant, document_id, chunk_index, page, text, filename, metadata, tags, "
                           "embedding) FROM STDIN").format(t=self._t)
        # One transaction: readers see the old set or the new one, never none or a mix.
        with self._connection() as conn, conn.transaction():
            self._lock_document(conn, tenant, document_id)
            conn.execute(sql.SQL("DELETE FROM {t} WHERE tenant = %s AND document_id = %s").format(t=self._t),
                         (tenant, document_id))
            with conn.cursor() as cur, cur.copy(copy_sql) as copy:
                for c in chunks:
                    copy.write_row((tenant, document_id, c.index, c.page, c.text, filename, meta_json, tags,
                                    to_pgvector(c.vector)))
        return len(chunks)

    def _delete(self, tenant: str, document_id: str) -> int:
        with self._connection() as conn, conn.transaction():
            self._lock_document(conn, tenant, document_id)
            cur = conn.execute(sql.SQL("DELETE FROM {t} WHERE tenant = %s AND document_id = %s").format(t=self._t),
                               (tenant, document_id))
            return cur.rowcount

    # --- reads ------------------------------------------------------------------------------------

    @staticmethod
    def _filters(document_ids: list[str] | None, tags: list[str], alias: str = "") -> tuple[sql.Composable, dict[str, Any]]:
        """Extra AND clauses (the tenant's comes first, in each query) with their named parameters."""
        prefix = sql.SQL(f"{alias}.") if alias else sql.SQL("")
        clauses: list[sql.Composable] = []
        params: dict[str, Any] = {}
        if document_ids is not None:
            clauses.append(sql.SQL(" AND {p}document_id = ANY(%(document_ids)s)").format(p=prefix))
            params["document_ids"] = document_ids
        if tags:
            clauses.append(sql.SQL(" AND {p}tags @> %(tags)s::text[]").format(p=prefix))
            params["tags"] = tags
        return sql.SQL("").join(clauses), params

    def _vector_candidates(self, tenant: str, vector: np.ndarray, limit: int, document_ids: list[str] | None,
                           tags: list[str]) -> list[Candidate]:
        extra, params = self._filters(document_ids, tags)
        query = sql.SQL(
            "SELECT document_id, chunk_index, text, page, filename, metadata, vector_send(embedding), 0.0 FROM {t} "
            "WHERE tenant = %(tenant)s{extra} ORDER BY embedding <=> %(vector)s::vector LIMIT %(limit)s"
        ).format(t=self._t, extra=extra)
        with self._connection() as conn:
            rows = conn.execute(query, {"tenant": tenant, "vector": to_pgvector(vector), "limit": limit, **params}
                                ).fetchall()
        return [self._candidate(row) for row in rows]

    def _keyword_candidates(self, tenant: str, text: str, limit: int, document_ids: list[str] | None,
                            tags: list[str]) -> list[Candidate]:
        extra, params = self._filters(document_ids, tags, alias="c")
        # BM25 over the rows this search covers (the tenant's, after the filters): N and df count those.
        # The question's lexemes (stemmed by the server like the column) ORed into a tsquery: every lexeme
        # is quoted as a tsquery literal, so words like "and", "!" or "<->" in a question are just words.
        query = sql.SQL("""
            WITH terms AS (
                SELECT DISTINCT lexeme,
                       '''' || replace(replace(lexeme, '\\', '\\\\'), '''', '\\''') || '''' AS quoted
                FROM unnest(tsvector_to_array(to_tsvector('english'::regconfig, %(text)s))) AS lexeme
            ), searched AS (
                SELECT count(*)::float8 AS n FROM {t} c WHERE c.tenant = %(tenant)s{extra}
            ), matched AS (
                SELECT c.document_id, c.chunk_index, c.tsv, length(c.tsv)::float8 AS dl FROM {t} c
                WHERE c.tenant = %(tenant)s
                  AND c.tsv @@ (SELECT string_agg(quoted, ' | ')::tsquery FROM terms){extra}
            ), postings AS (
                -- One row per (chunk, question term it holds): tf from the term's positions, df over the
                -- matched rows (every row holding a question term is one of them).
                SELECT m.document_id, m.chunk_index, m.dl, array_length(u.positions, 1)::float8 AS tf,
                       count(*) OVER (PARTITION BY u.lexeme)::float8 AS df
                FROM matched m CROSS JOIN LATERAL unnest(m.tsv) AS u
                WHERE u.lexeme IN (SELECT lexeme FROM terms)
            ), scored AS (
                SELECT p.document_id, p.chunk_index,
                       sum(ln(1 + (searched.n - p.df + 0.5) / (p.df + 0.5)) * p.tf * (%(k1)s + 1)
                           / (p.tf + %(k1)s * (1 - %(b)s + %(b)s * p.dl / NULLIF(a.avg_dl, 0)))) AS bm25
                FROM postings p, searched, (SELECT avg(dl) AS avg_dl FROM matched) AS a
                GROUP BY p.document_id, p.chunk_index
                ORDER BY bm25 DESC, p.document_id, p.chunk_index
                LIMIT %(limit)s
            )
            SELECT c.document_id, c.chunk_index, c.text, c.page, c.filename, c.metadata, vector_send(c.embedding),
                   scored.bm25
            FROM scored JOIN {t} c ON c.tenant = %(tenant)s AND c.document_id = scored.document_id
                                   AND c.chunk_index = scored.chunk_index
            ORDER BY scored.bm25 DESC""").format(t=self._t, extra=extra)
        named = {"text": text, "tenant": tenant, "k1": BM25_K1, "b": BM25_B, "limit": limit, **params}
        with self._connection() as conn:
            rows = conn.execute(query, named).fetchall()
        return [self._candidate(row) for row in rows]

    @staticmethod
    def _candidate(row: tuple[Any, ...]) -> Candidate:
        document_id, chunk_index, text, page, filename, metadata, embedding, bm25 = row
        return Candidate(document_id=document_id, chunk_index=int(chunk_index), text=text, page=page,
                         filename=filename, metadata=dict(metadata or {}), vector=from_vector_send(embedding),
                         bm25=float(bm25 or 0.0))

    def _count(self, tenant: str, document_id: str | None) -> int:
        query = sql.SQL("SELECT count(*) FROM {t} WHERE tenant = %s").format(t=self._t)
        params: list[Any] = [tenant]
        if document_id is not None:
            query = sql.SQL("{q} AND document_id = %s").format(q=query)
            params.append(document_id)
        with self._connection() as conn:
            row = conn.execute(query, params).fetchone()
        return int(row[0]) if row else 0

    def _list(self, tenant: str) -> list[DocumentSummary]:
        query = sql.SQL(
            "SELECT document_id, min(filename), count(*), "
            "coalesce(array_agg(DISTINCT page ORDER BY page) FILTER (WHERE page IS NOT NULL), '{{}}'), "
            "(array_agg(metadata))[1] FROM {t} WHERE tenant = %s GROUP BY document_id ORDER BY document_id"
        ).format(t=self._t)
        with self._connection() as conn:
            rows = conn.execute(query, (tenant,)).fetchall()
        return [DocumentSummary(doc_id, filename, int(chunks), list(pages), dict(meta or {}))
                for doc_id, filename, chunks, pages, meta in rows]
