"""Reading the fair dispatcher's state (jobs/dispatch_lib.lua) for the API: a waiting job's place in its
tenant's line, and each tenant's waiting and running jobs for /metrics and the system page."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aredis

from aitasks.jobs import keys
from aitasks.jobs.models import Job, Status


async def queue_position(r: aredis.Redis, job: Job) -> int | None:
    """1-based place of a waiting job among its tenant's waiting jobs of its queue (higher priorities
    first); None when it is not waiting in a line (handed to its queue, started, ended)."""
    if job.status is not Status.PENDING or job.priority not in keys.PRIORITIES:
        return None
    lines = [keys.pending(job.queue, job.tenant, p) for p in keys.PRIORITIES]
    mine = keys.PRIORITIES.index(job.priority)
    pipe = r.pipeline(transaction=False)
    pipe.lpos(lines[mine], job.id)
    for line in lines[:mine]:
        pipe.llen(line)
    at, *ahead = await pipe.execute()
    return None if at is None else 1 + int(at) + sum(int(n) for n in ahead)


@dataclass(frozen=True)
class TenantLoad:
    tenant: str
    waiting: int  # in its lines, on every queue
    running: int  # handed to a queue and not ended (max_running counts these)


async def tenant_loads(r: aredis.Redis, top: int) -> tuple[list[TenantLoad], TenantLoad]:
    """The ``top`` tenants by waiting + running jobs, and the rest summed as tenant "other" (bounded label
    cardinality for /metrics)."""
    pipe = r.pipeline(transaction=False)
    pipe.zrange(keys.DISPATCH_BUSY, 0, -1, withscores=True)
    for queue in keys.QUEUES:
        pipe.zrange(keys.dispatch(queue, "tenants"), 0, -1)
    busy, *waiting_sets = await pipe.execute()
    running = {_text(t): int(score) for t, score in busy}
    waiting_tenants = sorted({_text(t) for members in waiting_sets for t in members})
    pipe = r.pipeline(transaction=False)
    for tenant in waiting_tenants:
        for queue in keys.QUEUES:
            for p in keys.PRIORITIES:
                pipe.llen(keys.pending(queue, tenant, p))
    counts = await pipe.execute() if waiting_tenants else []
    per = len(keys.QUEUES) * len(keys.PRIORITIES)
    waiting = {t: sum(counts[i * per:(i + 1) * per]) for i, t in enumerate(waiting_tenants)}
    loads = [TenantLoad(t, waiting.get(t, 0), running.get(t, 0)) for t in set(waiting) | set(running)]
    loads.sort(key=lambda x: (-(x.waiting + x.running), x.tenant))
    rest = loads[top:]
    return loads[:top], TenantLoad("other", sum(x.waiting for x in rest), sum(x.running for x in rest))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
