"""What the API's routes share: Redis clients, stores, the event hub, the catalog. Built once per process."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aredis
import sqlalchemy as sa
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from aitasks.api.outbox import Outbox
from aitasks.api.outbox_forwarder import OutboxForwarder, unreachable
from aitasks.api.stream_slots import StreamSlots
from aitasks.jobs import keys, limits
from aitasks.jobs.apikeys import DEFAULT_SCOPE, Grant, digest, refill
from aitasks.jobs.artifacts import ArtifactBackend, open_artifacts
from aitasks.jobs.events import EventHub, Mailbox, offer
from aitasks.jobs.pipelined import PipelinedRedis, supports
from aitasks.jobs.store import AsyncJobStore
from aitasks.processors.registry import Registry, load_all
from aitasks.settings import Settings
from aitasks.store import engine as engines
from aitasks.store import document_rows, key_records

log = logging.getLogger("aitasks.api")
SyncRedis = redis.Redis  # the refills' client (a thread's); ``redis`` names the async one inside Services
LAST_USED_EVERY_S = 60.0


@dataclass
class Services:
    settings: Settings
    redis: aredis.Redis
    store: AsyncJobStore
    hub: EventHub
    artifacts: ArtifactBackend
    registry: Registry
    # Submits accepted while Redis is unreachable (api/outbox_forwarder.py); None when AITASKS_OUTBOX_MAX_MB=0.
    outbox: OutboxForwarder | None = None
    limits_sha: str = field(default_factory=lambda: hashlib.sha1(limits.TAKE.encode()).hexdigest())
    _auth_cache: dict[str, tuple[Grant, float]] = field(default_factory=dict)
    # When each key was last used, written to SQL about once a minute (never on a request's path).
    _last_used: dict[str, float] = field(default_factory=dict)
    _refill_after: dict[str, float] = field(default_factory=dict)  # per mark: no second look before then
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # The event queues of the open streams, by the digest of the key that opened them (revocation ends them).
    _key_streams: dict[str, set[Mailbox]] = field(default_factory=dict)
    # This process's open streams and waiting submits, counted cluster-wide for max_streams (api/stream_slots.py).
    streams: StreamSlots | None = None

    @classmethod
    def create(cls, settings: Settings) -> Services:
        url = settings.resolved_redis_url()
        # Fail fast when Redis is away (503 within the timeout), one immediate retry for a stale pooled socket.
        # A burst of more requests than connections (hundreds of streams opening at once) waits for a free
        # one, up to the same timeout, instead of failing at once as the plain pool does ("Too many connections").
        pool = aredis.BlockingConnectionPool.from_url(
            url, max_connections=200, timeout=settings.redis_timeout_s, socket_connect_timeout=1.0,
            socket_timeout=settings.redis_timeout_s, retry=Retry(NoBackoff(), 1), health_check_interval=0,
        )
        client = aredis.Redis.from_pool(pool)  # closed with the client
        pubsub_client = aredis.Redis.from_url(url, socket_connect_timeout=1.0, socket_keepalive=True,
                                              health_check_interval=15)
        pipe = PipelinedRedis(url, 1.0, settings.redis_timeout_s) if supports(url) else None
        services = cls(
            settings=settings, redis=client,
            store=AsyncJobStore(client, pipe, history=settings.history_enabled, outbox=settings.amqp_broker,
                                fair=settings.fair_dispatch),
            hub=EventHub(pubsub_client), artifacts=open_artifacts(settings),
            registry=load_all(),
        )
        services.hub.on_control = services._on_control
        services.streams = StreamSlots(client, settings.default_max_streams, settings.stream_lease_s)
        if settings.outbox_max_mb > 0:
            instance = settings.api_instance or f"port{settings.port}"
            outbox = Outbox(settings.data_dir / "outbox", instance, int(settings.outbox_max_mb * 1_000_000))
            services.outbox = OutboxForwarder(outbox, services.store, services.artifacts,
                                              settings.redis_timeout_s + 0.5)
            with contextlib.suppress(RuntimeError):  # built inside the app's lifespan: forward from the start
                asyncio.get_running_loop()
                services.outbox.start()
        return services

    def _on_control(self, message: dict[str, object]) -> None:
        revoked = message.get("revoked")
        if revoked is not None:
            self._auth_cache.clear()
            for queue in self._key_streams.get(str(revoked), ()):
                offer(queue, REVOKED, overflow=REVOKED)  # revocation wins over a full mailbox

    def watch_key(self, key_digest: str, queue: Mailbox) -> bool:
        """Until ``unwatch_key``, revoking the key puts ``REVOKED`` on the stream's mailbox. (A pair of calls,
        not a context manager: an open stream keeps no extra frame or ExitStack for it.) True."""
        self._key_streams.setdefault(key_digest, set()).add(queue)
        return True

    def unwatch_key(self, key_digest: str, queue: Mailbox) -> None:
        streams = self._key_streams.get(key_digest)
        if streams is not None:
            streams.discard(queue)
            if not streams:
                del self._key_streams[key_digest]

    async def grant_for_key(self, key: str) -> Grant | None:
        """What the key may do; None when unknown or revoked; Unauthorized (saying so) when expired."""
        d = digest(key)
        now = time.monotonic()
        cached = self._auth_cache.get(d)
        # Trust the cache only while the hub listens, since that is how revocations arrive; and while Redis
        # is unreachable, since no revocation can be written then (the outbox takes the key's submits).
        if cached and ((cached[1] > now and self.hub.connected.is_set()) or (self.outbox and self.outbox.down)):
            self._last_used[d] = time.time()
            return cached[0].check_expiry()
        try:
            grant = await self.grant_for_digest(d)
            if grant is None and await self._keys_refilled():
                grant = await self.grant_for_digest(d)
        except Exception as exc:
            if cached is None or self.outbox is None or not unreachable(exc):
                raise  # an unknown key while Redis is away: 503
            self.outbox.mark_down(exc)
            return cached[0].check_expiry()
        if grant is None:
            self._auth_cache.pop(d, None)
            return None
        self._last_used[d] = time.time()
        if self.settings.auth_cache_s > 0:
            if len(self._auth_cache) > 10_000:
                self._auth_cache.clear()
            self._auth_cache[d] = (grant, now + self.settings.auth_cache_s)
        return grant.check_expiry()

    async def _keys_refilled(self) -> bool:
        """After Redis lost its data (its ``loaded`` mark is gone), the keys of the store of record cached in
        it again; True when that was done now (look again)."""
        return await self._refilled(keys.API_KEYS_LOADED, refill, "API keys")

    async def documents_refilled(self) -> bool:
        """The same for document records (documents list and answer their status after a Redis loss)."""
        return await self._refilled(keys.DOCUMENTS_LOADED, document_rows.refill, "document records")

    async def _refilled(self, mark: str, fill: Callable[[SyncRedis, sa.Engine], int | None], what: str) -> bool:
        """Run ``fill`` when Redis lacks ``mark``; at most one look every 2 s per mark and process."""
        now = time.monotonic()
        if now < self._refill_after.get(mark, 0.0) or await self.redis.exists(mark):
            return False
        self._refill_after[mark] = now + 2.0
        url = self.settings.resolved_redis_url()

        def run() -> int | None:
            client = redis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=5.0)
            try:
                return fill(client, engines.shared(self.settings.resolved_database_url))
            finally:
                client.close()

        try:
            restored = await asyncio.to_thread(run)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("%s cannot be restored from the store of record: %s", what, str(exc).splitlines()[0])
            return False
        if restored:
            log.warning("Redis had lost its %s: %d restored from the store of record", what, restored)
        return restored is not None

    def start_background(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._write_last_used()))
        self._tasks.append(loop.create_task(self._refill_at_start()))
        if self.streams is not None:
            self._tasks.append(loop.create_task(self.streams.refresh_forever()))

    async def _refill_at_start(self) -> None:
        """Keys only Redis holds (a deployment from before the store of record) copied to SQL, and SQL's
        cached in a Redis that lost them, before the first request needs them."""
        try:
            await self._keys_refilled()
            await self.documents_refilled()
        except Exception as exc:  # Redis away at start: the first unknown key looks again
            log.info("API keys not checked against the store of record at start: %s", exc)

    async def stop_background(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.flush_last_used()

    async def flush_last_used(self) -> None:
        if not self._last_used:
            return
        batch, self._last_used = self._last_used, {}
        try:
            await asyncio.to_thread(key_records.touch, engines.shared(self.settings.resolved_database_url), batch)
        except sa.exc.SQLAlchemyError as exc:
            log.warning("when keys were last used cannot be written: %s", str(exc).splitlines()[0])

    async def _write_last_used(self) -> None:
        while True:
            await asyncio.sleep(LAST_USED_EVERY_S)
            await self.flush_last_used()

    async def grant_for_digest(self, key_digest: str) -> Grant | None:
        """The stored key's grant (not checked for expiry), or None."""
        tenant, scope, expires = await self.redis.hmget(keys.api_key(key_digest), "tenant", "scope", "expires_at")
        if tenant is None:
            return None
        return Grant(_text(tenant), _text(scope) if scope else DEFAULT_SCOPE, key_digest,
                     float(_text(expires)) if expires else None)


# Put on a stream's event queue when its key is revoked (api/routes/stream.py ends the stream).
REVOKED: dict[str, Any] = {"revoked": True}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
