"""What the API's routes share: Redis clients, stores, the event hub, the catalog. Built once per process."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from aitasks.jobs import keys
from aitasks.jobs.apikeys import digest
from aitasks.jobs.artifacts import ArtifactStore
from aitasks.jobs.events import EventHub
from aitasks.jobs.pipelined import PipelinedRedis, supports
from aitasks.jobs.store import AsyncJobStore
from aitasks.processors.registry import Registry, load_all
from aitasks.settings import Settings


@dataclass
class Services:
    settings: Settings
    redis: aredis.Redis
    store: AsyncJobStore
    hub: EventHub
    artifacts: ArtifactStore
    registry: Registry
    _auth_cache: dict[str, tuple[str, float]] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: Settings) -> Services:
        url = settings.resolved_redis_url()
        # Fail fast when Redis is away (503 within the timeout), one immediate retry for a stale pooled socket.
        client = aredis.Redis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=settings.redis_timeout_s,
            retry=Retry(NoBackoff(), 1), health_check_interval=0, max_connections=200,
        )
        pubsub_client = aredis.Redis.from_url(url, socket_connect_timeout=1.0, socket_keepalive=True,
                                              health_check_interval=15)
        pipe = PipelinedRedis(url, 1.0, settings.redis_timeout_s) if supports(url) else None
        services = cls(
            settings=settings, redis=client, store=AsyncJobStore(client, pipe),
            hub=EventHub(pubsub_client), artifacts=ArtifactStore(settings.artifacts_path),
            registry=load_all(),
        )
        services.hub.on_control = services._on_control
        return services

    def _on_control(self, message: dict[str, object]) -> None:
        if "revoked" in message:
            self._auth_cache.clear()

    async def tenant_for_key(self, key: str) -> str | None:
        d = digest(key)
        now = time.monotonic()
        cached = self._auth_cache.get(d)
        # Trust the cache only while the hub listens, since that is how revocations arrive.
        if cached and cached[1] > now and self.hub.connected.is_set():
            return cached[0]
        tenant = await self.redis.hget(keys.api_key(d), "tenant")
        if tenant is None:
            self._auth_cache.pop(d, None)
            return None
        tenant_s = tenant.decode() if isinstance(tenant, bytes) else str(tenant)
        if self.settings.auth_cache_s > 0:
            if len(self._auth_cache) > 10_000:
                self._auth_cache.clear()
            self._auth_cache[d] = (tenant_s, now + self.settings.auth_cache_s)
        return tenant_s
