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

import orjson
import redis

from aitasks.jobs import keys

KEY_PREFIX = "ait_"
TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass
class KeyInfo:
    id: str  # the first characters of the key, safe to show and enough to revoke it
    tenant: str
    name: str
    created_at: float


def create_key(r: redis.Redis, tenant: str, name: str = "") -> str:
    if not TENANT_RE.match(tenant):
        raise ValueError("tenant must be 1-64 characters: letters, digits, '_', '.', '-'")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    d = digest(key)
    pipe = r.pipeline(transaction=True)
    pipe.hset(keys.api_key(d), mapping={"tenant": tenant, "name": name, "created_at": repr(time.time()),
                                        "id": key[:12]})
    pipe.sadd(keys.API_KEYS_INDEX, d)
    pipe.execute()
    return key


def list_keys(r: redis.Redis) -> list[KeyInfo]:
    out: list[KeyInfo] = []
    for d in sorted(r.smembers(keys.API_KEYS_INDEX)):
        raw = r.hgetall(keys.api_key(d.decode() if isinstance(d, bytes) else d))
        if raw:
            h = {_text(k): _text(v) for k, v in raw.items()}
            out.append(KeyInfo(h["id"], h["tenant"], h.get("name", ""), float(h["created_at"])))
    return sorted(out, key=lambda k: k.created_at)


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
