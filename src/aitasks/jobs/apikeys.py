"""API keys: Bearer tokens bound to a tenant, stored only as SHA-256 digests.

Keys are 256-bit random strings, so a fast digest is enough (as for GitHub tokens); nobody can
brute-force them, and the digest is what a leaked Redis dump would show.
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

from aitasks.errors import Unauthorized
from aitasks.jobs import keys

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


def create_key(r: redis.Redis, tenant: str, name: str = "", scope: str = DEFAULT_SCOPE,
               expires_in_s: float | None = None) -> str:
    if not TENANT_RE.match(tenant):
        raise ValueError("tenant must be 1-64 characters: letters, digits, '_', '.', '-'")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of: {', '.join(SCOPES)}")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    d = digest(key)
    now = time.time()
    record = {"tenant": tenant, "name": name, "created_at": repr(now), "id": key[:12], "scope": scope}
    if expires_in_s is not None:
        record["expires_at"] = repr(now + expires_in_s)
    pipe = r.pipeline(transaction=True)
    pipe.hset(keys.api_key(d), mapping=record)  # type: ignore[arg-type]
    pipe.sadd(keys.API_KEYS_INDEX, d)
    pipe.execute()
    return key


def list_keys(r: redis.Redis) -> list[KeyInfo]:
    out: list[KeyInfo] = []
    for d in sorted(r.smembers(keys.API_KEYS_INDEX)):
        raw = r.hgetall(keys.api_key(d.decode() if isinstance(d, bytes) else d))
        if raw:
            h = {_text(k): _text(v) for k, v in raw.items()}
            expires = h.get("expires_at")
            out.append(KeyInfo(h["id"], h["tenant"], h.get("name", ""), float(h["created_at"]),
                               h.get("scope", DEFAULT_SCOPE), float(expires) if expires else None))
    return sorted(out, key=lambda k: k.created_at)


def tenant_has_key(r: redis.Redis, tenant: str) -> bool:
    """Whether the tenant holds a key that still works (not expired)."""
    now = time.time()
    return any(k.tenant == tenant and (k.expires_at is None or k.expires_at > now) for k in list_keys(r))


def first_key(r: redis.Redis, tenant: str, name: str) -> str | None:
    """A new key when the tenant has none that works; None otherwise (``aitasks run`` at every start must
    not pile up never-expiring keys)."""
    return None if tenant_has_key(r, tenant) else create_key(r, tenant, name)


def revoke_key(r: redis.Redis, key_or_id: str) -> int:
    """Revoke a key given in full or by its id (its first 12 characters). Returns how many were revoked."""
    targets: list[str] = []
    if len(key_or_id) > 12:
        if r.exists(keys.api_key(digest(key_or_id))):
            targets.append(digest(key_or_id))
    else:
        for d in r.smembers(keys.API_KEYS_INDEX):
            d_s = d.decode() if isinstance(d, bytes) else d
            if r.hget(keys.api_key(d_s), "id") == key_or_id.encode():
                targets.append(d_s)
    for d in targets:
        pipe = r.pipeline(transaction=True)
        pipe.delete(keys.api_key(d))
        pipe.srem(keys.API_KEYS_INDEX, d)
        pipe.publish(keys.CONTROL_CHANNEL, orjson.dumps({"revoked": d}))
        pipe.execute()
    return len(targets)
