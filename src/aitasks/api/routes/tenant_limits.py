"""`GET /api/v1/limits`: the caller's tenant limits in force and its usage now (issue 18). Read from Redis
only (the limits as cached from the store of record, jobs/limits.py): the caller's own tenant, never another's."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from aitasks.api import flow_control, schemas
from aitasks.api.deps import ServicesDep, Tenant
from aitasks.api.responses import FastJSONResponse as JSONResponse
from aitasks.api.routing import ApiRoute
from aitasks.jobs import keys
from aitasks.store.tenant_limits import ENFORCED, LIMITS

router = APIRouter(tags=["operations"], route_class=ApiRoute)


class LimitValues(BaseModel):
    """The limits in force: the tenant's own, else the deployment's default. 0: no limit; null: none set."""

    max_running: int | None = Field(None, description="Running jobs at once (stored; not enforced yet).")
    max_queued: int = Field(description="Jobs waiting to start (PENDING) before a submit answers 429.")
    submits_per_s: float = Field(description="Sustained submit rate (token bucket) before 429.")
    burst: int = Field(description="Submits at once above the rate: the bucket's size.")
    max_streams: int | None = Field(None, description="Open streams and waiting submits (stored; not enforced yet).")
    max_storage_mb: int | None = Field(None, description="Stored files in MB (stored; not enforced yet).")
    weight: float | None = Field(None, description="Share of the workers (stored; not enforced yet).")


class LimitUsage(BaseModel):
    queued: int = Field(description="The tenant's jobs waiting to start (PENDING) now.")
    submit_tokens: float | None = Field(description="Submits the bucket allows at once now; null: no rate limit.")
    bucket_full_in_s: float = Field(description="Seconds until the bucket is full again.")


class LimitsResponse(BaseModel):
    tenant: str
    limits: LimitValues
    own: list[str] = Field(description="The limits set for this tenant (`aitasks tenants set`); the others "
                                       "are the deployment's defaults.")
    enforced: list[str] = Field(description="The limits this version enforces.")
    usage: LimitUsage


@router.get("/api/v1/limits", response_model=LimitsResponse, responses=schemas.errors(401),
            summary="Your limits and usage")
async def tenant_limits(services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """The caller's tenant: its submit limits in force (set by an operator with `aitasks tenants set`, else
    the deployment's defaults), and its usage now: jobs queued, submit tokens left. Nothing is taken."""
    raw = await services.redis.hgetall(keys.tenant_limits(tenant))
    own = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
           for k, v in raw.items()}
    d = await flow_control.decide(services, tenant, 0)
    values: dict[str, int | float | None] = {
        name: LIMITS[name](float(own[name])) if name in own else None for name in LIMITS}
    values.update(max_queued=d.max_queued, submits_per_s=d.submits_per_s, burst=d.burst)
    return JSONResponse({
        "tenant": tenant, "limits": values, "own": [name for name in LIMITS if name in own],
        "enforced": list(ENFORCED),
        "usage": {"queued": d.queued, "submit_tokens": round(d.tokens, 3) if d.submits_per_s > 0 else None,
                  "bucket_full_in_s": round(d.full_in_s, 3)},
    })
