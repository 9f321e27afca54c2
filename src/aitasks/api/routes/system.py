"""`GET /api/v1/system`: the deployment at a glance for the dashboard's system page: workers with
what they run, and per-minute throughput and failures over the last minutes (the counters the
UPDATE script keeps, so every API process sees the whole deployment)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Query, Request

from aitasks.api.routing import ApiRoute
from aitasks.api import schemas
from aitasks.api.broker_depth import queue_depths
from aitasks.api.deps import ServicesDep, Tenant, is_admin
from aitasks.api.responses import FastJSONResponse as JSONResponse
from aitasks.api.routes.health import TENANT_LABELS, live_workers
from aitasks.jobs.dispatch import tenant_loads
from aitasks.jobs import keys

router = APIRouter(tags=["operations"], route_class=ApiRoute)
KINDS = {"finished": "succeeded", "failure": "failed", "revoked": "cancelled"}


@router.get("/api/v1/system", responses=schemas.errors(400, 401), summary="Workers and recent throughput")
async def system(request: Request, services: ServicesDep, tenant: Tenant,
                 minutes: int = Query(15, ge=1, le=120, description="How many minutes of history.")) -> JSONResponse:
    """Workers (name, host, queues, pool size, running jobs: their type and progress; the id only
    for the caller's own jobs), queue depths, and per-minute counts of jobs that succeeded, failed
    or were cancelled over the last `minutes` minutes. To an admin key, also `tenants`: the busiest
    tenants' waiting and running jobs (fair dispatch), the rest summed as "other"."""
    r = services.redis
    workers = await live_workers(services)
    running_ids = [job_id for w in workers for job_id in w.get("active", [])]
    pipe = r.pipeline(transaction=False)
    for job_id in running_ids:
        pipe.hmget(keys.job(job_id), "tenant", "type", "progress", "message")
    for kind in KINDS:
        pipe.hgetall(keys.metrics_timeline(kind))
    for q in keys.QUEUES:
        pipe.llen(q)
    for q in keys.QUEUES:
        pipe.hlen(keys.dispatch(q, "messages"))  # waiting in the tenants' lines (fair dispatch)
    results = await pipe.execute()
    jobs = dict(zip(running_ids, results[:len(running_ids)]))
    timelines = results[len(running_ids):len(running_ids) + len(KINDS)]
    at = len(running_ids) + len(KINDS)
    depths = await queue_depths(services.settings, results[at:at + len(keys.QUEUES)])
    depths = [d + int(w) for d, w in zip(depths, results[at + len(keys.QUEUES):])]

    def running(job_id: str) -> dict[str, Any]:
        owner, task_type, progress, message = (v.decode() if isinstance(v, bytes) else v for v in jobs[job_id])
        view: dict[str, Any] = {"task_type": task_type, "progress": int(progress or 0), "message": message or ""}
        if owner == tenant:
            view["task_id"] = job_id
        return view

    now_minute = int(time.time() // 60 * 60)
    history = []
    for m in range(now_minute - 60 * (minutes - 1), now_minute + 1, 60):
        row: dict[str, Any] = {"minute": time.strftime("%Y-%m-%dT%H:%M:00Z", time.gmtime(m))}
        for (kind, label), counts in zip(KINDS.items(), timelines):
            row[label] = int(counts.get(str(m).encode(), 0))
        history.append(row)
    done = sum(h["succeeded"] + h["failed"] + h["cancelled"] for h in history)
    extra: dict[str, Any] = {}
    if is_admin(request):
        top, other = await tenant_loads(r, TENANT_LABELS)
        extra["tenants"] = [{"tenant": x.tenant, "waiting": x.waiting, "running": x.running} for x in [*top, other]]
    return JSONResponse(extra | {
        "workers": [{"name": w.get("name"), "host": w.get("host"), "queues": w.get("queues", []),
                     "concurrency": w.get("concurrency"), "seen_at": w.get("seen_at"),
                     "running": [running(j) for j in w.get("active", []) if j in jobs and jobs[j][0]]}
                    for w in sorted(workers, key=lambda w: str(w.get("name")))],
        "queues": {q: int(d) for q, d in zip(keys.QUEUES, depths)},
        "history": history,
        "per_minute": round(done / minutes, 2),
        "failure_rate": round(sum(h["failed"] for h in history) / done, 4) if done else None,
    })
