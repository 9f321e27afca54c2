"""`GET /api/v1/limits`: the caller's tenant limits in force and its usage now (issue 18). Read from Redis
only (the limits as cached from the store of record, jobs/limits.py): the caller's own tenant, never another's.
`PUT /api/v1/tenants/{tenant_id}/limits`: an admin key sets any tenant's, as `aitasks tenants set` does."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from aitasks.api import flow_control, schemas
from aitasks.api.deps import ServicesDep, Tenant, is_admin
from aitasks.api.responses import FastJSONResponse as JSONResponse
from aitasks.api.routing import ApiRoute
from aitasks.api.services import Services
from aitasks.errors import FieldError, Forbidden, ServiceUnavailable, ValidationFailed
from aitasks.jobs import keys, limits
from aitasks.jobs.apikeys import TENANT_RE
from aitasks.store import engine as engines
from aitasks.store import tenant_limits as store_limits
from aitasks.store.tenant_limits import ENFORCED, LIMITS

router = APIRouter(tags=["operations"], route_class=ApiRoute)


class LimitValues(BaseModel):
    """The limits in force: the tenant's own, else the deployment's default. 0: no limit; null: none set."""

    max_running: int = Field(description="Jobs handed to the workers and not ended, at once, on every queue; the "
                                         "others wait in the tenant's line (fair dispatch).")
    max_queued: int = Field(description="Jobs waiting to start (PENDING) before a submit answers 429.")
    submits_per_s: float = Field(description="Sustained submit rate (token bucket) before 429.")
    burst: int = Field(description="Submits at once above the rate: the bucket's size.")
    max_streams: int = Field(description="Open SSE streams, WebSockets and waiting submits (`Prefer: wait`) at "
                                         "once, across all API processes, before 429.")
    max_storage_mb: int = Field(description="Stored files in MB (job inputs and outputs, uploaded files, "
                                            "documents) before uploads answer 413 and submits 507.")
    weight: float = Field(description="Share of the worker slots against other waiting tenants (2: twice "
                                      "a tenant of weight 1's).")


class LimitUsage(BaseModel):
    queued: int = Field(description="The tenant's jobs waiting to start (PENDING) now.")
    running: int = Field(description="The tenant's jobs handed to the workers and not ended (max_running).")
    submit_tokens: float | None = Field(description="Submits the bucket allows at once now; null: no rate limit.")
    bucket_full_in_s: float = Field(description="Seconds until the bucket is full again.")
    streams: int = Field(description="Open SSE streams, WebSockets and waiting submits now (a killed API "
                                     "process's count until their lease, AITASKS_STREAM_LEASE_S, ends).")
    storage_bytes: int = Field(description="Bytes stored now (counted since Redis last lost its data).")


class LimitsResponse(BaseModel):
    tenant: str
    limits: LimitValues
    own: list[str] = Field(description="The limits set for this tenant (`aitasks tenants set`); the others "
                                       "are the deployment's defaults.")
    enforced: list[str] = Field(description="The limits this version enforces.")
    usage: LimitUsage


class LimitsUpdate(BaseModel):
    """The limits to set (0: no limit); null sets one back to the deployment's default; one left out stays."""

    model_config = ConfigDict(extra="forbid")

    max_running: int | None = Field(None, ge=0)
    max_queued: int | None = Field(None, ge=0)
    submits_per_s: float | None = Field(None, ge=0, allow_inf_nan=False)
    burst: int | None = Field(None, ge=0)
    max_streams: int | None = Field(None, ge=0)
    max_storage_mb: int | None = Field(None, ge=0)
    weight: float | None = Field(None, ge=0, allow_inf_nan=False)


async def view(services: Services, tenant: str) -> dict[str, Any]:
    """A tenant's limits in force and its usage now, from Redis alone (nothing taken)."""
    raw = await services.redis.hgetall(keys.tenant_limits(tenant))
    own = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
           for k, v in raw.items()}
    d = await flow_control.decide(services, tenant, 0)
    running = await services.redis.zcard(keys.tenant_running(tenant))
    values: dict[str, int | float | None] = {
        name: LIMITS[name](float(own[name])) if name in own else None for name in LIMITS}
    values.update(max_queued=d.max_queued, submits_per_s=d.submits_per_s, burst=d.burst,
                  max_streams=d.max_streams, max_storage_mb=d.max_storage_mb)
    settings = services.settings
    if values["max_running"] is None:
        values["max_running"] = settings.default_max_running
    if not values["weight"]:
        values["weight"] = settings.default_weight
    return {
        "tenant": tenant, "limits": values, "own": [name for name in LIMITS if name in own],
        "enforced": list(ENFORCED),
        "usage": {"queued": d.queued, "running": int(running),
                  "submit_tokens": round(d.tokens, 3) if d.submits_per_s > 0 else None,
                  "bucket_full_in_s": round(d.full_in_s, 3), "streams": d.streams, "storage_bytes": d.stored_bytes},
    }


@router.get("/api/v1/limits", response_model=LimitsResponse, responses=schemas.errors(401),
            summary="Your limits and usage")
async def tenant_limits(services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """The caller's tenant: its limits in force (set by an operator with `aitasks tenants set`, else the
    deployment's defaults), and its usage now: jobs queued, submit tokens left, streams open, bytes stored.
    Nothing is taken; another tenant's usage is never shown."""
    return JSONResponse(await view(services, tenant))


@router.put("/api/v1/tenants/{tenant_id}/limits", response_model=LimitsResponse,
            responses=schemas.errors(400, 401, 403, 503), summary="Set a tenant's limits (admin)")
async def set_tenant_limits(tenant_id: str, update: LimitsUpdate, request: Request, services: ServicesDep,
                            tenant: Tenant) -> JSONResponse:
    """What `aitasks tenants set` does, for an `admin` key: the named limits of any tenant (0: no limit;
    null: back to the deployment's default; one left out keeps its value), written to the store of record
    first, then to Redis, where every submit from now on reads them. Answers the tenant's limits as
    `GET /api/v1/limits` shows them to it."""
    if not is_admin(request):
        raise Forbidden("Setting a tenant's limits needs an admin key (aitasks keys create --scope admin)",
                        [FieldError("tenant_id", "needs an admin key")])
    if not TENANT_RE.match(tenant_id):
        raise ValidationFailed("tenant_id must be 1-64 characters: letters, digits, '_', '.', '-'",
                               [FieldError("tenant_id", "is not a tenant name")])
    values = {name: getattr(update, name) for name in update.model_fields_set}
    if not values:
        raise ValidationFailed("name at least one limit", [FieldError("body", "names no limit")])
    engine = engines.shared(services.settings.resolved_database_url)
    try:
        row = await asyncio.to_thread(store_limits.set_limits, engine, tenant_id, values)
    except ValueError as exc:
        raise ValidationFailed(str(exc), [FieldError(str(exc).split(" ", 1)[0], str(exc))]) from None
    except sa.exc.SQLAlchemyError as exc:
        raise ServiceUnavailable("The store of record (AITASKS_DATABASE_URL) cannot be reached: "
                                 f"{str(exc).splitlines()[0]}; nothing was changed") from None
    pipe = services.redis.pipeline(transaction=True)
    pipe.delete(keys.tenant_limits(tenant_id))
    cached = limits.cached_values(row)
    if cached:
        pipe.hset(keys.tenant_limits(tenant_id), mapping=cached)  # type: ignore[arg-type]
    await pipe.execute()
    return JSONResponse(await view(services, tenant_id))
