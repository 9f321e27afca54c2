"""Per-process resources of a worker (Redis client, stores), created after fork, once per process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import redis

from aitasks.jobs.artifacts import ArtifactBackend, open_artifacts
from aitasks.jobs.store import JobStore
from aitasks.settings import Settings, get_settings


@dataclass
class WorkerResources:
    settings: Settings
    redis: redis.Redis
    store: JobStore
    artifacts: ArtifactBackend


_by_pid: dict[int, WorkerResources] = {}


def resources() -> WorkerResources:
    """The calling process's resources; a forked child never reuses its parent's sockets."""
    pid = os.getpid()
    res = _by_pid.get(pid)
    if res is None:
        settings = get_settings()
        client = redis.Redis.from_url(
            settings.resolved_redis_url(), socket_connect_timeout=5, socket_timeout=30,
            health_check_interval=10, retry_on_timeout=True,
        )
        store = JobStore(client, history=settings.history_enabled, outbox=settings.amqp_broker,
                         fair=settings.fair_dispatch)
        res = WorkerResources(settings, client, store, open_artifacts(settings))
        _by_pid.clear()
        _by_pid[pid] = res
    return res
