"""``max_streams`` (issue 18): a tenant's open SSE streams, WebSockets and waiting submits (``Prefer: wait``),
counted across every API process on Redis.

Each open stream is a member of the tenant's sorted set (jobs/keys.py ``tenant_streams``) scored by when its
lease ends (Redis server's clock). Its API process pushes the leases of all its open streams forward every
third of ``AITASKS_STREAM_LEASE_S``; only members whose lease has not ended count. So an API process that is
SIGKILLed (no ``finally`` runs) stops counting within one lease, and no cleanup is ever needed.

Opening is one atomic script (one round trip: check and add), closing one ``ZREM``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aredis

from aitasks.api.outbox_forwarder import unreachable
from aitasks.errors import FieldError, TooManyRequests
from aitasks.jobs import keys

log = logging.getLogger(__name__)

# KEYS: the tenant's limits hash, its streams set. ARGV: the default max_streams, the member, the lease (ms).
# Returns {1/0 opened, the live streams now (with this one when opened), max_streams}. 0: no limit.
OPEN = """
local m = tonumber(redis.call('HGET', KEYS[1], 'max_streams')) or tonumber(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local live = redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf')
if m > 0 and live >= m then return {0, live, m} end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[2])
redis.call('PEXPIRE', KEYS[2], 2 * tonumber(ARGV[3]))
return {1, live + 1, m}
"""
# KEYS: a tenant's streams set. ARGV: the lease (ms), then this process's open members of it (XX: a member
# already closed stays closed).
REFRESH = """
local t = redis.call('TIME')
local ends = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', ends, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[1]))
return 0
"""
WS_CLOSE_CODE = 4429  # a WebSocket over max_streams: the JSON error, then this close code (docs/api.md)


def over_limit(max_streams: int, live: int) -> TooManyRequests:
    message = (f"This tenant already has its max_streams of {max_streams} open ({live} open streams, WebSockets "
               "and waiting submits): close one and try again")
    return TooManyRequests(message, [FieldError("max_streams", f"at its limit of {max_streams} open streams")],
                           headers={"Retry-After": "1"},
                           extra={"limit": "max_streams", "max_streams": max_streams, "streams": live,
                                  "retry_after_s": 1.0})


@dataclass
class StreamSlots:
    """This API process's open streams, by tenant; ``refresh_forever`` keeps their leases alive."""

    redis: aredis.Redis
    default_max: int
    lease_s: float
    process: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    _open: dict[str, set[str]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    @property
    def lease_ms(self) -> int:
        return max(1000, int(self.lease_s * 1000))

    async def open(self, tenant: str) -> str:
        """Take one of the tenant's stream slots; its member. TooManyRequests (naming max_streams) when full."""
        member = f"{self.process}:{next(self._ids)}"
        raw = await self.redis.eval(OPEN, 2, keys.tenant_limits(tenant), keys.tenant_streams(tenant),  # type: ignore[misc]
                                    self.default_max, member, self.lease_ms)
        opened, live, max_streams = (int(v) for v in raw)
        if not opened:
            raise over_limit(max_streams, live)
        self._open.setdefault(tenant, set()).add(member)
        return member

    async def close(self, tenant: str, member: str) -> None:
        members = self._open.get(tenant)
        if members is not None:
            members.discard(member)
            if not members:
                self._open.pop(tenant, None)
        try:
            await self.redis.zrem(keys.tenant_streams(tenant), member)
        except Exception as exc:  # noqa: BLE001 (Redis away: the lease ends it, as after a crash)
            log.info("stream slot %s of %s not released now (its lease ends it): %s", member, tenant, exc)

    async def refresh(self) -> None:
        """Every open stream's lease pushed forward: one script per tenant, one round trip for them all."""
        if not self._open:
            return
        pipe = self.redis.pipeline(transaction=False)
        for tenant, members in list(self._open.items()):
            pipe.eval(REFRESH, 1, keys.tenant_streams(tenant), self.lease_ms, *members)  # type: ignore[arg-type]
        await pipe.execute()

    async def refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.refresh()
            except Exception as exc:  # noqa: BLE001 (Redis away: the next pass tries again)
                log.warning("stream leases not refreshed: %s", exc)



@contextlib.asynccontextmanager
async def slot(services: Any, tenant: str, wanted: bool = True) -> AsyncIterator[None]:
    """One of ``tenant``'s stream slots while inside (``wanted``: e.g. only a submit that waits). While Redis is
    unreachable and the outbox takes submits, nothing can be counted: it passes, as the submit limits do."""
    slots: StreamSlots | None = services.streams
    if not wanted or slots is None:
        yield
        return
    outbox = services.outbox
    try:
        member = await slots.open(tenant)
    except TooManyRequests:
        raise
    except Exception as exc:
        if outbox is None or not unreachable(exc):
            raise
        outbox.mark_down(exc)
        member = None
    try:
        yield
    finally:
        if member is not None:
            await asyncio.shield(slots.close(tenant, member))
