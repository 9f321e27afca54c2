"""API keys: Bearer tokens bound to a tenant, stored only as SHA-256 digests.

Keys are 256-bit random strings, so a fast digest is enough (as for GitHub tokens); nobody can
brute-force them, and the digest is what a leaked Redis dump would show.

Given the store of record (``db``), a key is written to SQL first and then cached in Redis, where the API
checks it on every request; a Redis that lost its data is filled again from SQL (``refill``), so keys
outlive Redis. Without ``db`` (tests of Redis alone), Redis is the only copy.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import redis
import sqlalchemy as sa

from aitasks.errors import ServiceUnavailable, Unauthorized
from aitasks.jobs import keys, limits
from aitasks.store import key_records
from aitasks.store.key_records import KeyRow

KEY_PREFIX = "ait_"
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# What a key may do, each including the one before: ``read`` (GETs: status, results, streams, lists),
# ``write`` (everything a tenant does: submit, cancel, upload, delete), ``admin`` (also operator-only
# things, e.g. the ``diagnostic`` type where the deployment keeps it off). Keys made before scopes: write.
SCOPES = ("read", "write", "admin")
DEFAULT_SCOPE = "write"
_DURATION_RE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_duration(text: str) -> float:
    """Seconds in ``30d``, ``12h``, ``90m``, ``45s``, ``2w``; ValueError otherwise."""
    m = _DURATION_RE.match(text.strip().lower())
    if not m or int(m.group(1)) <= 0:
        raise ValueError(f"not a duration: {text!r} (a positive number and s, m, h, d or w: 30d, 12h)")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def allows(scope: str, needed: str) -> bool:
    """Whether a key of ``scope`` may do what needs ``needed`` (an unknown scope may do nothing)."""
    return scope in SCOPES and SCOPES.index(scope) >= SCOPES.index(needed)


@dataclass(frozen=True)
class Grant:
    """What a checked key may do: its tenant and scope (the API keeps it for the request)."""

    tenant: str
    scope: str
    digest: str
    expires_at: float | None = None

    def check_expiry(self) -> Grant:
        if self.expires_at is not None and self.expires_at <= time.time():
            when = datetime.fromtimestamp(self.expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            raise Unauthorized(f"The API key expired at {when}: ask for a new one (aitasks keys create).")
        return self


@dataclass
class KeyInfo:
    id: str  # the first characters of the key, safe to show and enough to revoke it
    tenant: str
    name: str
    created_at: float
    scope: str = DEFAULT_SCOPE
    expires_at: float | None = None  # Unix time; None: never
    last_used_at: float | None = None  # as the API processes last wrote it to SQL (about once a minute)


def _unreachable(exc: sa.exc.SQLAlchemyError) -> ServiceUnavailable:
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ServiceUnavailable(f"The store of record (AITASKS_DATABASE_URL) cannot be reached: {first}")


def _cache(pipe: redis.client.Pipeline, row: KeyRow) -> None:
    pipe.hset(keys.api_key(row.digest), mapping=row.redis_record())  # type: ignore[arg-type]
    pipe.sadd(keys.API_KEYS_INDEX, row.digest)


def create_key(r: redis.Redis, tenant: str, name: str = "", scope: str = DEFAULT_SCOPE,
               expires_in_s: float | None = None, db: sa.Engine | None = None) -> str:
    """A new key for ``tenant``: in SQL first (when ``db``; ServiceUnavailable if it cannot be written),
    then in Redis."""
    if not TENANT_RE.match(tenant):
        raise ValueError("tenant must be 1-64 characters: letters, digits, '_', '.', '-'")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of: {', '.join(SCOPES)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    now = time.time()
    row = KeyRow(digest(key), key[:12], tenant, name, scope, now,
                 now + expires_in_s if expires_in_s is not None else None)
    if db is not None:
        try:
            key_records.save_key(db, row)
        except sa.exc.SQLAlchemyError as exc:
            raise _unreachable(exc) from None
    pipe = r.pipeline(transaction=True)
    _cache(pipe, row)
    pipe.execute()
    return key


def _redis_rows(r: redis.Redis) -> list[KeyRow]:
    out: list[KeyRow] = []
    for d in sorted(r.smembers(keys.API_KEYS_INDEX)):
        d_s = _text(d)
        raw = r.hgetall(keys.api_key(d_s))
        if raw:
            h = {_text(k): _text(v) for k, v in raw.items()}
            expires = h.get("expires_at")
            out.append(KeyRow(d_s, h["id"], h["tenant"], h.get("name", ""), h.get("scope", DEFAULT_SCOPE),
                              float(h["created_at"]), float(expires) if expires else None))
    return out


def list_keys(r: redis.Redis, db: sa.Engine | None = None) -> list[KeyInfo]:
    """The unrevoked keys: from SQL when given (with when each was last used), else from Redis."""
    try:
        rows = key_records.keys(db) if db is not None else _redis_rows(r)
    except sa.exc.SQLAlchemyError as exc:
        raise _unreachable(exc) from None
    return sorted((KeyInfo(k.key_id, k.tenant, k.name, k.created_at, k.scope, k.expires_at, k.last_used_at)
                   for k in rows), key=lambda k: k.created_at)


def tenant_has_key(r: redis.Redis, tenant: str, db: sa.Engine | None = None) -> bool:
    """Whether the tenant holds a key that still works (not expired)."""
    now = time.time()
    return any(k.tenant == tenant and (k.expires_at is None or k.expires_at > now) for k in list_keys(r, db))


def first_key(r: redis.Redis, tenant: str, name: str, db: sa.Engine | None = None) -> str | None:
    """A new key when the tenant has none that works; None otherwise (``aitasks run`` at every start must
    not pile up never-expiring keys)."""
    return None if tenant_has_key(r, tenant, db) else create_key(r, tenant, name, db=db)


def refill(r: redis.Redis, db: sa.Engine) -> int | None:
    """After Redis lost its data: every unrevoked key of SQL cached in Redis again. Keys only Redis holds
    (made before the store of record, or without it) are copied to SQL first. None when Redis already
    holds them all (its ``loaded`` mark is there); else how many keys Redis now holds."""
    if r.exists(keys.API_KEYS_LOADED):
        return None
    in_redis = _redis_rows(r)
    key_records.import_missing(db, in_redis)
    rows = key_records.keys(db)
    pipe = r.pipeline(transaction=True)
    for row in rows:
        _cache(pipe, row)
    limits.refill(pipe, db)  # a tenant's limits come back with its keys (jobs/limits.py)
    pipe.set(keys.API_KEYS_LOADED, repr(time.time()))
    pipe.execute()
    # A revoke commits in SQL before it deletes from Redis: one that raced this refill is undone here.
    late = key_records.revoked_among(db, [row.digest for row in rows] + [row.digest for row in in_redis])
    if late:
        _uncache(r, sorted(late))
    return len(rows) - len(late)


def _uncache(r: redis.Redis, digests: list[str]) -> None:
    for d in digests:
        pipe = r.pipeline(transaction=True)
        pipe.delete(keys.api_key(d))
        pipe.srem(keys.API_KEYS_INDEX, d)
        pipe.publish(keys.CONTROL_CHANNEL, orjson.dumps({"revoked": d}))
        pipe.execute()


def revoke_key(r: redis.Redis, key_or_id: str, db: sa.Engine | None = None) -> int:
    """Revoke a key given in full or by its id (its first 12 characters): in SQL first (when ``db``),
    then out of Redis, and every API process told (its open streams end). Returns how many were revoked."""
    targets: list[str] = []
    if db is not None:
        try:
            found = key_records.find(db, digest=digest(key_or_id)) if len(key_or_id) > 12 \
                else key_records.find(db, key_id=key_or_id)
            targets = [row.digest for row in found]
            if targets:
                key_records.revoke(db, targets)
        except sa.exc.SQLAlchemyError as exc:
            raise _unreachable(exc) from None
    if len(key_or_id) > 12:
        if r.exists(keys.api_key(digest(key_or_id))) and digest(key_or_id) not in targets:
            targets.append(digest(key_or_id))
    else:
        for d in r.smembers(keys.API_KEYS_INDEX):
            d_s = _text(d)
            if r.hget(keys.api_key(d_s), "id") == key_or_id.encode() and d_s not in targets:
                targets.append(d_s)
    _uncache(r, targets)
    return len(targets)
