"""Webhooks: what a submit may ask for, how deliveries are signed, and the tenant's signing secret.

A submit may carry ``webhook`` (an http or https URL) and ``webhook_events_filter`` (any of ``start``,
``progress``, ``completed``; default ``completed``), as Replicate's API does. Each matching change of the
job is queued for delivery by the same Redis script that records it (jobs/scripts.py), and the workers'
delivery thread (worker/webhooks.py) POSTs the job's status document, signed the Standard Webhooks way:
``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`` with the tenant's secret (``aitasks keys secret --tenant NAME``).

The secret is not kept in Redis: it is derived (HMAC-SHA256) from the deployment's secret key, kept outside
Redis (jobs/secret_key.py), and a random nonce that Redis keeps per tenant (replaced to rotate). Redis also
keeps the key's fingerprint, so a process with another key fails loudly instead of signing with a secret
no receiver knows. A secret stored in clear by an older version is replaced by a derived one on first use.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from typing import Any

import redis

from aitasks.errors import ConfigurationError
from aitasks.jobs import keys

EVENTS = ("start", "progress", "completed")
DEFAULT_EVENTS = ("completed",)
SECRET_PREFIX = "whsec_"


# The tenant's entry is "<nonce>.<key fingerprint>". One round trip: made when missing or when it still
# holds an older version's clear secret (SET NX could not replace that).
_ENTRY = """
local v = redis.call('GET', KEYS[1])
if not v or string.sub(v, 1, 6) == 'whsec_' or ARGV[2] == '1' then
  v = ARGV[1]
  redis.call('SET', KEYS[1], v)
end
return v
"""


@functools.cache
def _deployment_key() -> bytes:
    from aitasks.jobs.secret_key import secret_key
    from aitasks.settings import get_settings

    return secret_key(get_settings())


def _fingerprint(key: bytes) -> str:
    return hmac.new(key, b"aitasks key fingerprint", hashlib.sha256).hexdigest()[:16]


def _entry(r: redis.Redis, tenant: str, key: bytes, rotate: bool) -> str:
    fresh = f"{secrets.token_hex(16)}.{_fingerprint(key)}"
    value: Any = r.eval(_ENTRY, 1, keys.webhook_secret(tenant), fresh, "1" if rotate else "0")
    return value.decode() if isinstance(value, bytes) else str(value)


def _derive(key: bytes, tenant: str, entry: str) -> str:
    nonce, _, fingerprint = entry.partition(".")
    if fingerprint != _fingerprint(key):
        raise ConfigurationError(
            f"tenant {tenant!r}'s webhook secret was made with another secret key than this process has: set "
            "AITASKS_SECRET_KEY (or <data_dir>/secret.key) as the other processes have it, or make a new "
            f"secret with `aitasks keys secret --tenant {tenant} --rotate`")
    digest = hmac.new(key, f"webhook secret\0{tenant}\0{nonce}".encode(), hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(digest).decode()


def tenant_secret(r: redis.Redis, tenant: str, key: bytes | None = None) -> str:
    """The tenant's signing secret, made on first use (two processes agree on one). ``key``: the
    deployment's secret key, default the settings' (AITASKS_SECRET_KEY or <data_dir>/secret.key)."""
    key = key or _deployment_key()
    return _derive(key, tenant, _entry(r, tenant, key, rotate=False))


def rotate_secret(r: redis.Redis, tenant: str, key: bytes | None = None) -> str:
    """A new secret for the tenant (a new nonce); the old one stops verifying at once."""
    key = key or _deployment_key()
    return _derive(key, tenant, _entry(r, tenant, key, rotate=True))


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value (Standard Webhooks, version 1)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does: recompute the signature and compare in constant time."""
    expected = sign(secret, headers["webhook-id"], int(headers["webhook-timestamp"]), body)
    return any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split())
