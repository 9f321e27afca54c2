"""Tenants and API keys in the store of record: written here first, then cached in Redis (jobs/apikeys.py),
so a Redis that lost its data (a lost disk, a failover that missed writes, a ``FLUSHALL``) is filled again
from here and every key still authenticates. Only the key's SHA-256 digest is kept, as in Redis."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from aitasks.store.schema import api_keys, tenants


@dataclass(frozen=True)
class KeyRow:
    digest: str
    key_id: str
    tenant: str
    name: str
    scope: str
    created_at: float
    expires_at: float | None
    last_used_at: float | None = None
    revoked_at: float | None = None

    def redis_record(self) -> dict[str, str]:
        """The Redis hash of the key (jobs/apikeys.py reads it on every request)."""
        record = {"tenant": self.tenant, "name": self.name, "created_at": repr(self.created_at),
                  "id": self.key_id, "scope": self.scope}
        if self.expires_at is not None:
            record["expires_at"] = repr(self.expires_at)
        return record


def _insert_ignore(connection: sa.Connection, table: sa.Table, rows: list[dict[str, Any]], key: str) -> None:
    if not rows:
        return
    dialect = postgresql if connection.dialect.name == "postgresql" else sqlite
    connection.execute(dialect.insert(table).values(rows).on_conflict_do_nothing(index_elements=[key]))


def save_key(db: sa.Engine, row: KeyRow) -> None:
    """The key and its tenant (created on its first key), in one transaction."""
    with db.begin() as connection:
        _insert_ignore(connection, tenants, [{"id": row.tenant, "created_at": row.created_at}], "id")
        _insert_ignore(connection, api_keys, [_values(row)], "digest")


def _values(row: KeyRow) -> dict[str, Any]:
    return {"digest": row.digest, "key_id": row.key_id, "tenant": row.tenant, "name": row.name,
            "scope": row.scope, "created_at": row.created_at, "expires_at": row.expires_at,
            "last_used_at": row.last_used_at, "revoked_at": row.revoked_at}


def _row(m: Any) -> KeyRow:
    return KeyRow(m.digest, m.key_id, m.tenant, m.name, m.scope, m.created_at, m.expires_at, m.last_used_at,
                  m.revoked_at)


def keys(db: sa.Engine, include_revoked: bool = False) -> list[KeyRow]:
    """Every key, oldest first (revoked ones only when asked)."""
    query = sa.select(api_keys).order_by(api_keys.c.created_at)
    if not include_revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    with db.connect() as connection:
        return [_row(m) for m in connection.execute(query)]


def find(db: sa.Engine, digest: str | None = None, key_id: str | None = None) -> list[KeyRow]:
    """The unrevoked keys with this digest, or whose id (first 12 characters) is ``key_id``."""
    query = sa.select(api_keys).where(api_keys.c.revoked_at.is_(None))
    query = query.where(api_keys.c.digest == digest) if digest else query.where(api_keys.c.key_id == key_id)
    with db.connect() as connection:
        return [_row(m) for m in connection.execute(query)]


def revoke(db: sa.Engine, digests: list[str], at: float | None = None) -> None:
    with db.begin() as connection:
        connection.execute(sa.update(api_keys).where(api_keys.c.digest.in_(digests),
                                                     api_keys.c.revoked_at.is_(None))
                           .values(revoked_at=at or time.time()))


def revoked_among(db: sa.Engine, digests: list[str]) -> set[str]:
    if not digests:
        return set()
    with db.connect() as connection:
        return set(connection.scalars(sa.select(api_keys.c.digest).where(
            api_keys.c.digest.in_(digests), api_keys.c.revoked_at.is_not(None))))


def import_missing(db: sa.Engine, rows: list[KeyRow]) -> None:
    """Keys Redis held before the store of record existed (an upgraded deployment): kept as they are."""
    with db.begin() as connection:
        _insert_ignore(connection, tenants, [{"id": t, "created_at": min(r.created_at for r in rows if r.tenant == t)}
                                             for t in {r.tenant for r in rows}], "id")
        _insert_ignore(connection, api_keys, [_values(r) for r in rows], "digest")


def touch(db: sa.Engine, last_used: dict[str, float]) -> None:
    """When each key was last seen by an API process (written in batches, never on a request's path)."""
    with db.begin() as connection:
        for digest, at in last_used.items():
            connection.execute(sa.update(api_keys).where(api_keys.c.digest == digest)
                               .values(last_used_at=sa.func.max(sa.func.coalesce(api_keys.c.last_used_at, 0), at))
                               if connection.dialect.name == "sqlite" else
                               sa.update(api_keys).where(api_keys.c.digest == digest)
                               .values(last_used_at=sa.func.greatest(sa.func.coalesce(api_keys.c.last_used_at, 0),
                                                                     at)))
