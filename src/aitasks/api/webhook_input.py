"""The ``webhook`` and ``webhook_events_filter`` fields of a submit, checked before anything is accepted.

A webhook URL is refused when it could turn the service against its own side of the network: the host is
resolved at submit and every address it resolves to must pass the guard (jobs/net_guard.py: no loopback,
private, CGNAT, link-local, ULA or metadata address, in any IPv6 spelling, unless the operator allows the
network), nor be the service's own Redis. The worker checks again at send, against the address it
connects to (worker/webhook_http.py), so a name that resolves elsewhere later is caught there.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urlsplit

import orjson

from aitasks.errors import FieldError, ValidationFailed
from aitasks.jobs.net_guard import IPAddress, refusal, same_endpoint
from aitasks.jobs.webhooks import DEFAULT_EVENTS, EVENTS
from aitasks.settings import Settings

MAX_URL = 2000


def _bad(field: str, reason: str) -> ValidationFailed:
    return ValidationFailed(f"{field} {reason}", [FieldError(field, reason)])


def events_filter(value: Any) -> tuple[str, ...]:
    if value is None:
        return DEFAULT_EVENTS
    if isinstance(value, str):  # multipart: a JSON list, or names separated by commas
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _bad("webhook_events_filter", f"must be a non-empty list of: {', '.join(EVENTS)}")
    unknown = sorted(set(value) - set(EVENTS))
    if unknown:
        raise _bad("webhook_events_filter", f"has unknown events {unknown}; known: {', '.join(EVENTS)}")
    return tuple(e for e in EVENTS if e in value)


async def _addresses(host: str, port: int) -> set[IPAddress]:
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=3)
    return {ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos}


async def read_webhook(fields: dict[str, Any], settings: Settings) -> tuple[str | None, tuple[str, ...]]:
    """Take the webhook fields out of a submit's fields; (url, events) or (None, ())."""
    url = fields.pop("webhook", None)
    raw_filter = fields.pop("webhook_events_filter", None)
    if url in (None, ""):
        if raw_filter is not None:
            raise _bad("webhook_events_filter", "needs a webhook URL")
        return None, ()
    if not isinstance(url, str) or len(url) > MAX_URL:
        raise _bad("webhook", f"must be an http(s) URL of at most {MAX_URL} characters")
    events = events_filter(raw_filter)
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise _bad("webhook", "has an invalid port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _bad("webhook", "must be an http:// or https:// URL with a host")
    try:
        addresses = await _addresses(parts.hostname, port)
    except (OSError, asyncio.TimeoutError, ValueError):
        raise _bad("webhook", f"host {parts.hostname!r} does not resolve") from None
    allowed = settings.webhook_allow_networks
    for addr in sorted(addresses, key=str):
        reason = refusal(addr, allowed)
        if reason:
            raise _bad("webhook", f"points at {addr}, {reason}")
    redis_url = urlsplit(settings.resolved_redis_url())
    redis_port = redis_url.port or 6379
    if redis_url.hostname and port == redis_port:
        try:
            redis_addresses = await _addresses(redis_url.hostname, port)
        except (OSError, asyncio.TimeoutError, ValueError):
            redis_addresses = set()
        if any(same_endpoint(a, port, [(r, redis_port) for r in redis_addresses]) for a in addresses):
            raise _bad("webhook", "points at the service's own Redis")
    return url, events
