"""Webhooks: what a submit may ask for, how deliveries are signed, and the tenant's signing secret.

A submit may carry ``webhook`` (an http or https URL) and ``webhook_events_filter`` (any of ``start``,
``progress``, ``completed``; default ``completed``), as Replicate's API does. Each matching change of the
job is queued for delivery by the same Redis script that records it (jobs/scripts.py), and the workers'
delivery thread (worker/webhooks.py) POSTs the job's status document, signed the Standard Webhooks way:
``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`` with the tenant's secret (``aitasks keys secret --tenant NAME``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Any

import redis

from aitasks.jobs import keys

EVENTS = ("start", "progress", "completed")
DEFAULT_EVENTS = ("completed",)
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def tenant_secret(r: redis.Redis, tenant: str) -> str:
    """The tenant's signing secret, made on first use (SET NX: two processes agree on one)."""
    key = keys.webhook_secret(tenant)
    r.set(key, new_secret(), nx=True)
    value: Any = r.get(key)
    return value.decode() if isinstance(value, bytes) else str(value)


def rotate_secret(r: redis.Redis, tenant: str) -> str:
    secret = new_secret()
    r.set(keys.webhook_secret(tenant), secret)
    return secret


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value (Standard Webhooks, version 1)."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does: recompute the signature and compare in constant time."""
    expected = sign(secret, headers["webhook-id"], int(headers["webhook-timestamp"]), body)
    return any(hmac.compare_digest(expected, s) for s in headers["webhook-signature"].split())
