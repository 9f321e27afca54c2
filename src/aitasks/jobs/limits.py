"""Per-tenant submit limits, enforced on Redis (issue 18): no SQL on a submit.

Each submit path takes its tokens through ``TAKE`` (jobs/limits.lua) before the job is built: one atomic
script on the Redis server's clock, so the API processes share each tenant's token bucket (``submits_per_s``
refilled continuously up to ``burst``) without a race, and a tenant already holding ``max_queued`` queued
jobs is refused. CREATE checks ``max_queued`` again in the step that queues the job, so concurrent submits
cannot pass it together. A tenant's queued jobs are a sorted set that CREATE adds to and the UPDATE
script's ``queued`` fragment (jobs/queued_end.lua) removes from when the job leaves PENDING.

A tenant's limits are written to the store of record first (store/tenant_limits.py), then cached here as a
hash of the values set for it; ``refill`` puts them back after Redis lost its data (with the API keys, so
a tenant's key and its limits come back together). A limit not set is the deployment's default.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis
import sqlalchemy as sa

from aitasks.jobs import keys, lua
from aitasks.settings import Settings
from aitasks.store import tenant_limits

TAKE = lua.load("aitasks.jobs", "limits.lua")


@dataclass(frozen=True)
class Decision:
    """TAKE's answer: whether the submit may go on, which limit refused it, and the tenant's usage after it."""

    allowed: bool
    refused: str  # '', 'submits_per_s', 'max_queued' or 'max_storage_mb'
    submits_per_s: float  # 0: no rate limit
    burst: int
    tokens: float  # left in the bucket
    full_in_s: float  # until the bucket is full again
    retry_after_s: float  # until the tokens asked for are there; -1: never (more than the burst at once)
    queued: int
    max_queued: int  # 0: no limit
    streams: int = 0  # open now (api/stream_slots.py)
    max_streams: int = 0
    stored_bytes: int = 0  # jobs/storage_quota.py
    max_storage_mb: int = 0

    @classmethod
    def parse(cls, raw: list[Any]) -> Decision:
        text = [v.decode() if isinstance(v, bytes) else v for v in raw]
        return cls(bool(int(text[0])), str(text[1]), float(text[2]), int(float(text[3])), float(text[4]),
                   float(text[5]), float(text[6]), int(text[7]), int(text[8]), int(text[9]), int(text[10]),
                   int(text[11]), int(text[12]))


def take_call(settings: Settings, tenant: str, n: int) -> tuple[list[str], list[str | int | float]]:
    """TAKE's keys and arguments for ``n`` submits of ``tenant`` (0: only read the usage)."""
    oldest_ms = int(time.time() * 1000) - settings.pending_ttl_s * 1000
    return ([keys.tenant_limits(tenant), keys.tenant_bucket(tenant), keys.tenant_queued(tenant),
             keys.tenant_streams(tenant), keys.tenant_storage(tenant)],
            [n, repr(float(settings.default_submits_per_s)), settings.default_burst, settings.default_max_queued,
             oldest_ms, settings.default_max_streams, settings.default_max_storage_mb])


def peek(r: redis.Redis, settings: Settings, tenant: str) -> Decision:
    """The tenant's usage now (nothing taken): the CLI's ``tenants show``."""
    script_keys, args = take_call(settings, tenant, 0)
    return Decision.parse(r.eval(TAKE, len(script_keys), *script_keys, *args))  # type: ignore[arg-type]


def cached_values(limits: dict[str, Any]) -> dict[str, str]:
    """The Redis hash of a tenant's limits: the ones set for it, as text TAKE reads with tonumber."""
    return {name: repr(float(v)) if isinstance(v, float) else str(v) for name, v in limits.items() if v is not None}


def _cache(pipe: redis.client.Pipeline, tenant: str, limits: dict[str, Any]) -> None:
    pipe.delete(keys.tenant_limits(tenant))
    values = cached_values(limits)
    if values:
        pipe.hset(keys.tenant_limits(tenant), mapping=values)  # type: ignore[arg-type]


def save(r: redis.Redis, db: sa.Engine, tenant: str, values: dict[str, Any]) -> dict[str, int | float | None]:
    """Set the tenant's limits (None: back to the default): in SQL first, then its Redis cache from the row
    as SQL now holds it. ValueError for a bad value (nothing written)."""
    row = tenant_limits.set_limits(db, tenant, values)
    pipe = r.pipeline(transaction=True)
    _cache(pipe, tenant, row)
    pipe.execute()
    return row


def refill(pipe: redis.client.Pipeline, db: sa.Engine) -> int:
    """Every tenant's own limits cached again (after Redis lost its data); how many tenants have some."""
    rows = tenant_limits.all_limits(db)
    for tenant, limits in rows.items():
        _cache(pipe, tenant, limits)
    return len(rows)


def effective(settings: Settings, own: dict[str, int | float | None] | None) -> dict[str, int | float | None]:
    """The limits in force for a tenant: its own, else the deployment's defaults (None: no default yet)."""
    defaults: dict[str, int | float | None] = {name: None for name in tenant_limits.LIMITS}
    defaults.update(max_queued=settings.default_max_queued, submits_per_s=float(settings.default_submits_per_s),
                    burst=settings.default_burst, max_running=settings.default_max_running,
                    max_streams=settings.default_max_streams, max_storage_mb=settings.default_max_storage_mb,
                    weight=float(settings.default_weight))
    return {name: (own or {}).get(name) if (own or {}).get(name) is not None else defaults[name]
            for name in tenant_limits.LIMITS}
