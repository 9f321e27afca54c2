"""Dependencies routes declare with ``Annotated``: the shared services and the caller's tenant."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, WebSocket

from aitasks.api.services import Services
from aitasks.errors import NotFound, Unauthorized
from aitasks.jobs.models import Job


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


async def current_tenant(request: Request) -> str:
    services = get_services_now(request)
    token = bearer(request.headers.get("authorization"))
    if token is None:
        raise Unauthorized()
    tenant = await services.tenant_for_key(token)
    if tenant is None:
        raise Unauthorized("The API key is not valid (unknown or revoked).")
    return tenant


Tenant = Annotated[str, Depends(current_tenant)]


async def websocket_tenant(ws: WebSocket) -> str | None:
    services: Services = ws.app.state.services
    token = bearer(ws.headers.get("authorization"))
    if token is None:
        return None
    return await services.tenant_for_key(token)


async def load_job(services: Services, tenant: str, job_id: str) -> Job:
    """The tenant's job, or 404 for an unknown, expired or foreign id (never say which)."""
    job = await services.store.get(job_id) if len(job_id) <= 100 else None
    if job is None or job.tenant != tenant:
        raise NotFound(f"No task with id {job_id!r} (unknown, expired, or not yours)")
    return job
