"""Dependencies routes declare with ``Annotated``: the shared services and the caller's tenant."""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated

from fastapi import Depends, Query, Request, WebSocket

from aitasks.api.services import Services
from aitasks.errors import Forbidden, NotFound, Unauthorized
from aitasks.jobs import keys
from aitasks.jobs.apikeys import Grant, allows, digest
from aitasks.jobs.models import Job
from aitasks.store.history import recorded_job

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


GRANT_SCOPE_KEY = "aitasks.grant"
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# POSTs that only read, so a `read` key may make them: a stream token (for the GET streams) and a search.
READ_POSTS = frozenset({"/api/v1/stream-tokens", "/api/v1/search"})


def needed_scope(request: Request) -> str:
    # scope["path"], not request.url: building the URL object cost ~5% of a submit's CPU.
    return "read" if request.method in READ_METHODS or request.scope["path"] in READ_POSTS else "write"


async def current_grant(request: Request) -> Grant:
    """The caller's key from ``Authorization: Bearer <key>``: 401 without a valid one, 403 when its scope
    does not allow the request (a ``read`` key writing). Checked once per request (api/routing.py calls it
    before the body is read; the answer is kept in the request's scope)."""
    grant: Grant | None = request.scope.get(GRANT_SCOPE_KEY)
    if grant is not None:
        return grant
    services = get_services_now(request)
    token = bearer(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized()
    grant = await services.grant_for_key(token)
    if grant is None:
        raise Unauthorized("The API key is not valid (unknown or revoked).")
    needed = needed_scope(request)
    if not allows(grant.scope, needed):
        raise Forbidden(f"This API key has the scope {grant.scope!r}, which may not do this "
                        f"({request.method} needs {needed!r}).")
    request.scope[GRANT_SCOPE_KEY] = grant
    return grant


async def current_tenant(request: Request) -> str:
    """The caller's tenant (see ``current_grant``)."""
    return (await current_grant(request)).tenant


def is_admin(request: Request) -> bool:
    """Whether the request's key (already checked) has the ``admin`` scope."""
    grant: Grant | None = request.scope.get(GRANT_SCOPE_KEY)
    return grant is not None and allows(grant.scope, "admin")


# The one way a route authenticates: declare this. Every route that does is checked before its body is read.
Tenant = Annotated[str, Depends(current_tenant)]


def _stream_token_key(token: str) -> str:
    return f"{keys.PREFIX}:stream-token:{hashlib.sha256(token.encode()).hexdigest()}"


async def issue_stream_token(services: Services, tenant: str, api_key: str) -> str:
    token = STREAM_TOKEN_PREFIX + secrets.token_urlsafe(24)
    await services.redis.set(_stream_token_key(token), f"{tenant}\n{digest(api_key)}", ex=STREAM_TOKEN_TTL_S)
    return token


async def grant_for_stream_token(services: Services, token: str) -> Grant | None:
    """The grant of a live stream token's key; None when unknown, expired, or its key was revoked or
    expired."""
    if not token.startswith(STREAM_TOKEN_PREFIX) or len(token) > 100:
        return None
    raw = await services.redis.get(_stream_token_key(token))
    if raw is None:
        return None
    tenant, _, key_digest = (raw.decode() if isinstance(raw, bytes) else str(raw)).partition("\n")
    grant = await services.grant_for_digest(key_digest)
    if grant is None or grant.tenant != tenant:
        return None
    try:
        return grant.check_expiry()
    except Unauthorized:
        return None


async def stream_tenant(
    request: Request,
    token: Annotated[str | None, Query(description="A stream token from `POST /api/v1/stream-tokens`, for "
                                                   "clients that cannot send the Authorization header "
                                                   "(browsers' EventSource). Never the API key.")] = None,
) -> str:
    """The header's key as everywhere; without a header, a stream token in ``?token=``."""
    if request.headers.get("authorization") is not None or token is None:
        return await current_tenant(request)
    grant = await grant_for_stream_token(get_services_now(request), token)
    if grant is None:
        raise Unauthorized("The stream token is not valid (unknown or expired): get a new one from "
                           "POST /api/v1/stream-tokens.")
    request.scope[GRANT_SCOPE_KEY] = grant  # the stream ends when its key is revoked
    return grant.tenant


StreamTenant = Annotated[str, Depends(stream_tenant)]


def stream_key_digest(request: Request) -> str | None:
    """The digest of the key that opened this stream (directly or through a stream token)."""
    grant: Grant | None = request.scope.get(GRANT_SCOPE_KEY)
    return grant.digest if grant else None


async def websocket_grant(ws: WebSocket) -> Grant | None:
    services: Services = ws.app.state.services
    token = bearer(ws.headers.get("authorization"))
    if token is None:
        query_token = ws.query_params.get("token")
        if ws.headers.get("authorization") is None and query_token:
            return await grant_for_stream_token(services, query_token)
        return None
    try:
        return await services.grant_for_key(token)
    except Unauthorized:  # expired
        return None


async def live_or_recorded(services: Services, tenant: str, job_id: str) -> Job | None:
    """The job from Redis while it holds the record, else the tenant's ended one from the store of record;
    None when neither has it. The Redis copy is any tenant's: the caller checks."""
    job = await services.store.get(job_id) if len(job_id) <= 100 else None
    if job is None:
        job = await recorded_job(services.settings.resolved_database_url, tenant, job_id)
    return job


async def load_job(services: Services, tenant: str, job_id: str) -> Job:
    """The tenant's job: from Redis while it holds the record, else the ended one from the store of record
    (SQL: Redis let it go once recorded, or lost it); the same Job either way. 404 for an unknown, expired
    or foreign id (never say which); 503 when only SQL could answer and it cannot be read."""
    job = await live_or_recorded(services, tenant, job_id)
    if job is None or job.tenant != tenant:
        raise NotFound(f"No task with id {job_id!r} (unknown, expired, or not yours)")
    return job
