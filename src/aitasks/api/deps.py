"""Dependencies routes declare with ``Annotated``: the shared services and the caller's tenant."""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated

from fastapi import Depends, Query, Request, WebSocket

from aitasks.api.services import Services
from aitasks.errors import NotFound, Unauthorized
from aitasks.jobs import keys
from aitasks.jobs.apikeys import digest
from aitasks.jobs.models import Job

# Stream tokens: for browsers, which cannot set headers on EventSource or WebSocket. A random token
# stored in Redis (so every API process knows it) for STREAM_TOKEN_TTL_S, bound to one tenant and to
# the key that asked for it (a revoked key's tokens stop working at once). Never the API key itself.
STREAM_TOKEN_TTL_S = 60
STREAM_TOKEN_PREFIX = "ast_"


def get_services_now(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


async def get_services(request: Request) -> Services:
    # async on purpose: FastAPI runs a plain `def` dependency in its thread pool, one hop per request.
    return get_services_now(request)


ServicesDep = Annotated[Services, Depends(get_services)]


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


TENANT_SCOPE_KEY = "aitasks.tenant"


async def current_tenant(request: Request) -> str:
    """The caller's tenant from ``Authorization: Bearer <key>``; 401 otherwise. Checked once per request
    (api/routing.py calls it before the body is read; the answer is kept in the request's scope)."""
    tenant: str | None = request.scope.get(TENANT_SCOPE_KEY)
    if tenant is not None:
        return tenant
    services = get_services_now(request)
    token = bearer(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized()
    tenant = await services.tenant_for_key(token)
    if tenant is None:
        raise Unauthorized("The API key is not valid (unknown or revoked).")
    request.scope[TENANT_SCOPE_KEY] = tenant
    return tenant


# The one way a route authenticates: declare this. Every route that does is checked before its body is read.
Tenant = Annotated[str, Depends(current_tenant)]


def _stream_token_key(token: str) -> str:
    return f"{keys.PREFIX}:stream-token:{hashlib.sha256(token.encode()).hexdigest()}"


async def issue_stream_token(services: Services, tenant: str, api_key: str) -> str:
    token = STREAM_TOKEN_PREFIX + secrets.token_urlsafe(24)
    await services.redis.set(_stream_token_key(token), f"{tenant}\n{digest(api_key)}", ex=STREAM_TOKEN_TTL_S)
    return token


async def tenant_for_stream_token(services: Services, token: str) -> str | None:
    """The tenant of a live stream token; None when unknown, expired, or its key was revoked."""
    if not token.startswith(STREAM_TOKEN_PREFIX) or len(token) > 100:
        return None
    raw = await services.redis.get(_stream_token_key(token))
    if raw is None:
        return None
    tenant, _, key_digest = (raw.decode() if isinstance(raw, bytes) else str(raw)).partition("\n")
    if await services.redis.hget(keys.api_key(key_digest), "tenant") is None:
        return None
    return tenant


async def stream_tenant(
    request: Request,
    token: Annotated[str | None, Query(description="A stream token from `POST /api/v1/stream-tokens`, for "
                                                   "clients that cannot send the Authorization header "
                                                   "(browsers' EventSource). Never the API key.")] = None,
) -> str:
    """The header's key as everywhere; without a header, a stream token in ``?token=``."""
    if request.headers.get("authorization") is not None or token is None:
        return await current_tenant(request)
    tenant = await tenant_for_stream_token(get_services_now(request), token)
    if tenant is None:
        raise Unauthorized("The stream token is not valid (unknown or expired): get a new one from "
                           "POST /api/v1/stream-tokens.")
    return tenant


StreamTenant = Annotated[str, Depends(stream_tenant)]


async def websocket_tenant(ws: WebSocket) -> str | None:
    services: Services = ws.app.state.services
    token = bearer(ws.headers.get("authorization"))
    if token is None:
        query_token = ws.query_params.get("token")
        if ws.headers.get("authorization") is None and query_token:
            return await tenant_for_stream_token(services, query_token)
        return None
    return await services.tenant_for_key(token)


async def load_job(services: Services, tenant: str, job_id: str) -> Job:
    """The tenant's job, or 404 for an unknown, expired or foreign id (never say which)."""
    job = await services.store.get(job_id) if len(job_id) <= 100 else None
    if job is None or job.tenant != tenant:
        raise NotFound(f"No task with id {job_id!r} (unknown, expired, or not yours)")
    return job
