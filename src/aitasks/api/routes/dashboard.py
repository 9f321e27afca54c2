"""The web dashboard (static files: ES modules, no build step) and the stream tokens it needs.

A browser's EventSource and WebSocket cannot send an Authorization header, and an API key in a URL
lands in access logs. So the dashboard trades its key (sent as the Bearer header) for a short-lived
stream token (``POST /api/v1/stream-tokens``) and opens ``/events?token=...`` with that.
"""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse as PlainJSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from aitasks.api.routing import ApiRoute
from aitasks.api import schemas
from aitasks.api.deps import STREAM_TOKEN_TTL_S, ServicesDep, Tenant, bearer, issue_stream_token
from aitasks.api.errors import error_body
from aitasks.api.responses import FastJSONResponse as JSONResponse

WEB_DIR = Path(__file__).resolve().parent.parent.parent / "web"
UI_PREFIX = "/ui"

# Everything from this origin: no CDN, no inline script; images may be blob: URLs of fetched artifacts.
CSP = ("default-src 'self'; img-src 'self' blob: data:; object-src 'self' blob:; frame-src 'self' blob:; "
       "style-src 'self'; script-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
# On every dashboard answer (the page at / and everything under /ui/, /ui/index.html and its errors
# included), so no path serves the dashboard framable, sniffable or leaking its URL; revalidated on each
# load so an upgrade shows at once.
HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}

router = APIRouter(tags=["dashboard"], route_class=ApiRoute)


class StreamToken(BaseModel):
    token: str = Field(description="Pass as `?token=` to the SSE and WebSocket endpoints.")
    expires_in: int = Field(description="Seconds the token stays valid.")
    expires_at: float = Field(description="Unix time the token expires.")
    tenant: str


@router.post(
    "/api/v1/stream-tokens", status_code=201, response_model=StreamToken,
    responses=schemas.errors(401), summary="A short-lived token for live updates",
)
async def create_stream_token(request: Request, services: ServicesDep, tenant: Tenant) -> JSONResponse:
    """A token, valid for 60 s, that opens the caller's live streams (`GET /api/v1/tasks/{id}/events`,
    the WebSockets) as `?token=` instead of the Authorization header, for browsers. It is bound to the
    caller's tenant and key (revoking the key ends it); an API key is never accepted as `?token=`."""
    key = bearer(request.headers.get("authorization")) or ""
    token = await issue_stream_token(services, tenant, key)
    return JSONResponse({"token": token, "expires_in": STREAM_TOKEN_TTL_S,
                         "expires_at": round(time.time() + STREAM_TOKEN_TTL_S, 3), "tenant": tenant},
                        201, headers={"Cache-Control": "no-store"})


@router.get("/", include_in_schema=False)
async def dashboard() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


class _Static(StaticFiles):
    """The dashboard's files (/ui/...): every answer, a 304 or an error too, carries ``HEADERS``."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:  # answered here, not by the app's handler, to keep the headers
            code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "error")
            message = "No such file" if exc.status_code == 404 else str(exc.detail)
            response = PlainJSONResponse(error_body(message, code), exc.status_code)
        response.headers.update(HEADERS)
        return response


def static_files() -> StaticFiles:
    return _Static(directory=WEB_DIR, check_dir=False)
