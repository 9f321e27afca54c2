"""Builds the FastAPI application. It only wires: routes, dependencies, error handlers, lifespan."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from aitasks import __version__, error_reports, tracing
from aitasks.api.responses import FastJSONResponse
from aitasks.api.errors import install_error_handlers
from aitasks.api.flow_control import RateHeaders
from aitasks.api.lean_streams import LeanEventStreams, serve_stream, stream_path
from aitasks.api.limits import BodyLimitMiddleware
from aitasks.api.openapi import install_openapi
from aitasks.api.routing import lift_fast_routes
from aitasks.api.routes import (
    catalog, compat, dashboard, documents, health, replicate, stream, system, tasks, tenant_limits,
)
from aitasks.api.services import Services
from aitasks.settings import Settings, get_settings

DESCRIPTION = """
Run AI jobs in the background: submit, follow progress live, fetch results and files, cancel.

Authenticate with `Authorization: Bearer <API key>` (create one with `aitasks keys create --tenant NAME`).
The web dashboard is at `/`.
Every error answers `{"error": <sentence>, "code": <code>, "fields": [{"field", "message"}]}`.
"""


class AitasksAPI(FastAPI):
    """FastAPI with open SSE streams served before its middleware stack (api/lean_streams.py): a stream stays
    open for minutes, and each layer it passed through keeps a frame (and ServerErrorMiddleware a closure)
    alive that long. With FastAPI's own telemetry on, a request goes through it as before (its span covers
    the stream) and the LeanEventStreams middleware inside serves the stream."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task_id = stream_path(scope)
        if task_id is not None and "fastapi.telemetry" not in scope and not self._telemetry_on():
            if self.root_path:
                scope["root_path"] = self.root_path
            scope["app"] = self
            await serve_stream(task_id, scope, receive, send, super().__call__)
            return
        await super().__call__(scope, receive, send)

    def _telemetry_on(self) -> bool:
        native = getattr(self, "_native_telemetry", None)  # FastAPI's native telemetry (None: a FastAPI without)
        return native is not None and bool(native.enabled())


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.check_production()
    tracing.setup("api")  # each uvicorn process builds its app here: each exports its own spans and reports
    error_reports.setup("api", settings.environment)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services.create(settings)
        app.state.services = services
        services.hub.start()
        services.start_background()
        # What startup built (modules, the catalog, schemas: ~90k objects) lives as long as the process.
        # Out of the collector's reach, a full collection under load takes ~0 ms instead of ~50 ms, a
        # pause every request in flight used to wait out (the submit's p99; docs/benchmarks.md).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await services.stop_background()
            await services.hub.stop()
            await services.redis.aclose()
            if services.store.pipe is not None:
                await services.store.pipe.aclose()
            await services.hub.r.aclose()

    app = AitasksAPI(title="aitasks", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  default_response_class=FastJSONResponse)
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes + 64 * 1024)
    # Open SSE streams below the routing, when AitasksAPI did not serve them outermost (api/lean_streams.py).
    app.add_middleware(LeanEventStreams)
    app.add_middleware(RateHeaders)  # RateLimit-* on accepted submits too (api/flow_control.py)
    for module in (tasks, stream, compat, catalog, health, system, tenant_limits, dashboard, replicate, documents):
        app.include_router(module.router)
    app.mount(dashboard.UI_PREFIX, dashboard.static_files(), name="dashboard")
    # Every router uses api/routing.ApiRoute: the key before the body; simple endpoints (the submits among
    # them) are served without FastAPI's per-request machinery, from the application's route table.
    lift_fast_routes(app)
    install_openapi(app)
    return app
