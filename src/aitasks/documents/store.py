"""The vector store interface: one set of chunks per (tenant, document), searched per tenant.

Tenant isolation lives here, not in callers: every public method takes the tenant as a required
argument, checks it (and every document id and filter key) against a strict pattern, and passes only
checked values to the backend, which puts the tenant in every filter it writes, reads or deletes with.
Since no checked value can hold a quote, a space or an operator, no id can change a filter's meaning.

Search is hybrid: the backend returns candidates by vector similarity and by keywords (BM25), and
``fuse`` ranks their union by ``alpha * cosine + (1 - alpha) * normalised BM25``: the vector finds
paraphrases, the keywords lift the chunk that names the rare word (a product, a code) the question names.
The keyword term counts only when the question names an identifier, number or name (documents/evidence.py):
a vague question's common words matching some chunk are no evidence, so it is ranked by the vector alone.
"""

from __future__ import annotations

import abc
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aitasks.documents.chunking import Chunk
from aitasks.documents.errors import InvalidStoreArgument
from aitasks.documents.evidence import distinctive_terms

TENANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # the same shape as API key tenants
DOCUMENT_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
FILTER_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
MAX_TOP_K = 100
MAX_DOCUMENT_IDS = 1000
MAX_METADATA_KEYS = 32
MAX_METADATA_VALUE_CHARS = 1024
DEFAULT_ALPHA = 0.8

Scalar = str | int | float | bool


def check_tenant(tenant: str) -> str:
    if not isinstance(tenant, str) or not TENANT_RE.fullmatch(tenant):
        raise InvalidStoreArgument(f"Invalid tenant {tenant!r}: letters, digits, '_', '.', '-' (1-64 characters).")
    return tenant


def check_document_id(document_id: str) -> str:
    if not isinstance(document_id, str) or not DOCUMENT_ID_RE.fullmatch(document_id):
        raise InvalidStoreArgument(
            f"Invalid document id {document_id!r}: letters, digits, '_', '.', ':', '-' (1-128 characters).")
    return document_id


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Scalar]:
    """Flat metadata: checked keys, scalar values (the things a filter can match exactly)."""
    if not metadata:
        return {}
    if len(metadata) > MAX_METADATA_KEYS:
        raise InvalidStoreArgument(f"At most {MAX_METADATA_KEYS} metadata keys are accepted.")
    checked: dict[str, Scalar] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not FILTER_KEY_RE.fullmatch(key):
            raise InvalidStoreArgument(f"Invalid metadata key {key!r}: letters, digits, '_', '.', '-'.")
        if isinstance(value, float) and not np.isfinite(value):
            raise InvalidStoreArgument(f"Metadata {key!r} must be a finite number.")
        if not isinstance(value, str | int | float | bool):
            raise InvalidStoreArgument(f"Metadata {key!r} must be a string, number or boolean.")
        if isinstance(value, str) and len(value) > MAX_METADATA_VALUE_CHARS:
            raise InvalidStoreArgument(f"Metadata {key!r} is longer than {MAX_METADATA_VALUE_CHARS} characters.")
        checked[key] = value
    return checked


def metadata_tags(metadata: Mapping[str, Scalar]) -> list[str]:
    """One tag per pair, ``key=<hash of the JSON value>``: an exact-match filter on any value needs no
    quoting at all, since a tag is only checked-key characters and hex digits."""
    return [f"{key}={_value_hash(value)}" for key, value in metadata.items()]


def _value_hash(value: Scalar) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 3.0 and 3 match each other, as JSON readers expect
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class StoredChunk:
    """A chunk with its vector, as the store keeps it."""

    index: int
    text: str
    page: int | None
    vector: np.ndarray
    token_count: int = 0


def with_vectors(chunks: Sequence[Chunk], vectors: np.ndarray) -> list[StoredChunk]:
    if len(chunks) != len(vectors):
        raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
    return [StoredChunk(c.index, c.text, c.page, np.asarray(v, dtype=np.float32), c.token_count)
            for c, v in zip(chunks, vectors, strict=True)]


@dataclass(frozen=True)
class DocumentWrite:
    """One document's ``replace_document`` arguments, for ``replace_documents``."""

    tenant: str
    document_id: str
    chunks: Sequence[StoredChunk]
    filename: str | None = None
    metadata: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class SearchHit:
    document_id: str
    filename: str | None
    page: int | None
    score: float
    text: str
    chunk_index: int
    vector_score: float
    keyword_score: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The shape of one ``POST /api/v1/search`` result."""
        return {"document_id": self.document_id, "filename": self.filename, "page": self.page,
                "score": round(self.score, 6), "text": self.text}


@dataclass(frozen=True)
class DocumentSummary:
    document_id: str
    filename: str | None
    chunks: int
    pages: list[int]
    metadata: dict[str, Any]


@dataclass
class Candidate:
    """A row a backend found, with its stored vector (to score keyword-only finds by cosine too)."""

    document_id: str
    chunk_index: int
    text: str
    page: int | None
    filename: str | None
    metadata: dict[str, Any]
    vector: np.ndarray
    bm25: float = 0.0


def fuse(query_vector: np.ndarray, by_vector: Sequence[Candidate], by_keyword: Sequence[Candidate], top_k: int,
         alpha: float = DEFAULT_ALPHA, query_text: str | None = None) -> list[SearchHit]:
    """Rank the union of both candidate lists by ``alpha * cosine + (1 - alpha) * bm25 / max bm25``, or by
    cosine alone when ``0 < alpha`` and ``query_text`` names no identifier, number or name (so hybrid
    ranks a vague question as vector-only search does; docs/benchmarks.md, "Search quality")."""
    if 0.0 < alpha < 1.0 and not distinctive_terms(query_text or ""):
        alpha, by_keyword = 1.0, ()
    merged: dict[tuple[str, int], Candidate] = {(c.document_id, c.chunk_index): c for c in by_vector}
    for cand in by_keyword:
        key = (cand.document_id, cand.chunk_index)
        if key in merged:
            merged[key].bm25 = max(merged[key].bm25, cand.bm25)
        else:
            merged[key] = cand
    top_bm25 = max((c.bm25 for c in merged.values()), default=0.0)
    hits = []
    for cand in merged.values():
        cosine = float(np.dot(query_vector, cand.vector))
        keyword = cand.bm25 / top_bm25 if top_bm25 > 0 else 0.0
        hits.append(SearchHit(cand.document_id, cand.filename, cand.page, alpha * cosine + (1 - alpha) * keyword,
                              cand.text, cand.chunk_index, cosine, keyword, cand.metadata))
    hits.sort(key=lambda h: (-h.score, h.document_id, h.chunk_index))
    return hits[:top_k]


class VectorStore(abc.ABC):
    """Chunks of documents with their vectors, per tenant. Public methods check their arguments and
    hand only checked values to the backend's ``_`` methods, which filter by tenant every time."""

    dimension: int

    def replace_document(self, tenant: str, document_id: str, chunks: Sequence[StoredChunk], *,
                         filename: str | None = None, metadata: Mapping[str, Any] | None = None) -> int:
        """Make ``chunks`` the document's only chunks, in one atomic step where the backend allows:
        running it twice (a retried job) leaves exactly one set. Returns the number stored."""
        write = self._checked(DocumentWrite(tenant, document_id, chunks, filename, metadata))
        if not write.chunks:
            self._delete(write.tenant, write.document_id)
            return 0
        return self._replace(write.tenant, write.document_id, write.chunks, write.filename, dict(write.metadata or {}))

    def replace_documents(self, writes: Sequence[DocumentWrite]) -> list[int | Exception]:
        """``replace_document`` for several documents, in one commit where the backend allows (a group
        commit: LanceDB's per-write cost is a table version and a merge over the table, not the rows).
        One outcome per write, in order: the chunks stored, or that write's own error, so one bad
        document fails alone. Should the group's commit fail, each write is tried alone."""
        outcomes: list[int | Exception] = [0] * len(writes)
        group: list[tuple[int, DocumentWrite]] = []
        alone: list[tuple[int, DocumentWrite]] = []
        seen: set[tuple[str, str]] = set()
        for i, write in enumerate(writes):
            try:
                checked = self._checked(write)
            except InvalidStoreArgument as exc:
                outcomes[i] = exc
                continue
            key = (checked.tenant, checked.document_id)
            # A document twice in one group (uploaded again meanwhile): the later write goes after, alone.
            (alone if key in seen or not checked.chunks else group).append((i, checked))
            seen.add(key)
        if len(group) > 1:
            try:
                counts = self._replace_many([w for _, w in group])
                for (i, _), count in zip(group, counts, strict=True):
                    outcomes[i] = count
                group = []
            except Exception:  # noqa: BLE001 - each write is tried alone below and keeps its own error
                pass
        for i, write in sorted(group + alone, key=lambda pair: pair[0]):
            try:
                outcomes[i] = self.replace_document(write.tenant, write.document_id, write.chunks,
                                                    filename=write.filename, metadata=write.metadata)
            except Exception as exc:  # noqa: BLE001 - the caller raises its own
                outcomes[i] = exc
        return outcomes

    def _checked(self, write: DocumentWrite) -> DocumentWrite:
        tenant, document_id = check_tenant(write.tenant), check_document_id(write.document_id)
        checked = check_metadata(write.metadata)
        for chunk in write.chunks:
            self._check_vector(chunk.vector)
        if len({c.index for c in write.chunks}) != len(write.chunks):
            raise InvalidStoreArgument("Chunk indexes must be unique within a document.")
        return DocumentWrite(tenant, document_id, write.chunks, write.filename, checked)

    def delete_document(self, tenant: str, document_id: str) -> int:
        """Remove every chunk of the document; returns how many there were."""
        return self._delete(check_tenant(tenant), check_document_id(document_id))

    def search(self, tenant: str, vector: np.ndarray, query_text: str | None, top_k: int = 5,
               document_ids: Sequence[str] | None = None, filters: Mapping[str, Any] | None = None,
               alpha: float = DEFAULT_ALPHA) -> list[SearchHit]:
        """The tenant's best ``top_k`` chunks, best first; optionally only in ``document_ids`` and only
        documents whose metadata equals every ``filters`` pair."""
        tenant = check_tenant(tenant)
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidStoreArgument(f"top_k must be between 1 and {MAX_TOP_K}.")
        if not 0.0 <= alpha <= 1.0:
            raise InvalidStoreArgument("alpha must be between 0 and 1.")
        ids = None
        if document_ids is not None:
            if len(document_ids) > MAX_DOCUMENT_IDS:
                raise InvalidStoreArgument(f"At most {MAX_DOCUMENT_IDS} document ids per search.")
            ids = sorted({check_document_id(d) for d in document_ids})
            if not ids:
                return []
        tags = metadata_tags(check_metadata(filters))
        query = self._check_vector(vector)
        pool = max(top_k * 4, 40)  # candidates per method: room for the other method to reorder them
        by_vector = self._vector_candidates(tenant, query, pool, ids, tags)
        keywords_count = bool(query_text and query_text.strip()) and (  # (fuse() would drop them otherwise)
            alpha == 0.0 or (alpha < 1.0 and bool(distinctive_terms(query_text or ""))))
        by_keyword = self._keyword_candidates(tenant, (query_text or "").strip(), pool, ids, tags) if (
            keywords_count) else []
        return fuse(query, by_vector, by_keyword, top_k, alpha, query_text)

    def count(self, tenant: str, document_id: str | None = None) -> int:
        tenant = check_tenant(tenant)
        return self._count(tenant, check_document_id(document_id) if document_id is not None else None)

    def list_documents(self, tenant: str) -> list[DocumentSummary]:
        return self._list(check_tenant(tenant))

    def _check_vector(self, vector: Any) -> np.ndarray:
        array = np.asarray(vector, dtype=np.float32)
        if array.shape != (self.dimension,) or not np.all(np.isfinite(array)):
            raise InvalidStoreArgument(f"A vector must be {self.dimension} finite numbers, got shape {array.shape}.")
        return array

    # --- what a backend implements: arguments arrive checked --------------------------------------

    @abc.abstractmethod
    def _replace(self, tenant: str, document_id: str, chunks: Sequence[StoredChunk], filename: str | None,
                 metadata: dict[str, Scalar]) -> int: ...

    @abc.abstractmethod
    def _delete(self, tenant: str, document_id: str) -> int: ...

    def _replace_many(self, writes: Sequence[DocumentWrite]) -> list[int]:
        """Checked writes of different documents, each with chunks: one commit where the backend can."""
        return [self._replace(w.tenant, w.document_id, w.chunks, w.filename, dict(w.metadata or {})) for w in writes]

    @abc.abstractmethod
    def _vector_candidates(self, tenant: str, vector: np.ndarray, limit: int, document_ids: list[str] | None,
                           tags: list[str]) -> list[Candidate]: ...

    @abc.abstractmethod
    def _keyword_candidates(self, tenant: str, text: str, limit: int, document_ids: list[str] | None,
                            tags: list[str]) -> list[Candidate]: ...

    @abc.abstractmethod
    def _count(self, tenant: str, document_id: str | None) -> int: ...

    @abc.abstractmethod
    def _list(self, tenant: str) -> list[DocumentSummary]: ...

    def close(self) -> None:  # noqa: B027 - optional for backends
        """Release connections (a server backend); the embedded one holds nothing open."""
