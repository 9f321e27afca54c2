"""Opens the vector store a location names. Apart from ``store`` (the interface), so the backends import
the interface and nothing imports back: only this module knows every backend."""

from __future__ import annotations

from aitasks.documents.errors import InvalidStoreArgument
from aitasks.documents.store import VectorStore


def open_store(location: str, dimension: int) -> VectorStore:
    """The store at ``location``: a folder (or ``lancedb://<folder>``) for the embedded LanceDB default,
    ``postgresql://`` (or ``postgres://``) for PostgreSQL with pgvector."""
    if location.startswith(("postgresql://", "postgres://")):
        from aitasks.documents.pg_store import PgVectorStore

        return PgVectorStore(location, dimension=dimension)
    if location.startswith("lancedb://"):
        location = location.removeprefix("lancedb://")
    elif "://" in location:
        raise InvalidStoreArgument(
            f"Unknown vector store {location.split('://')[0]!r}: use a folder, lancedb:// or postgresql://.")
    from aitasks.documents.lancedb_store import LanceDBStore

    return LanceDBStore(location, dimension=dimension)
