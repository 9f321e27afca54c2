"""The one route class of the API: the key is checked before the body is read, and simple endpoints run
without FastAPI's per-request machinery.

- **Authentication first.** A route authenticates by declaring the ``Tenant`` dependency (api/deps.py),
  the same way everywhere. FastAPI reads and parses a body *before* it solves dependencies, so an
  anonymous caller could make it parse megabytes of JSON; this class checks the key first for every
  route that declares ``Tenant`` (the answer is cached for the request, so the dependency costs nothing
  more).
- **The fast path.** An endpoint that returns its own Response and whose parameters are only the
  request, string path parameters and dependencies that take nothing but the request (``Tenant``,
  ``ServicesDep``) is called directly:
  no dependency solving, no exit stacks per request. Submit endpoints parse their own bodies (JSON or
  multipart, files as parts) and are all of this kind, which is what kept the submit's p99 down
  (docs/benchmarks.md). ``lift_fast_routes`` also serves these endpoints from the application's own
  route table, ahead of the included routers, so a request skips FastAPI's router machinery and exit
  stacks too. Everything else, including the OpenAPI document, is FastAPI's as usual.
"""

from __future__ import annotations

import typing
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from fastapi import Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Route

from aitasks.api.deps import current_tenant, get_services

Handler = Callable[[Request], Coroutine[Any, Any, Response]]

# Dependencies the fast path may call itself: each takes only the request.
_REQUEST_ONLY = {current_tenant, get_services}


def declares(dependant: Dependant, call: Callable[..., Any]) -> bool:
    """Whether ``call`` is among the dependant's dependencies, at any depth."""
    return any(d.call is call or declares(d, call) for d in dependant.dependencies)


def _fast_plan(dependant: Dependant) -> list[tuple[str, Callable[[Request], Awaitable[Any]]]] | None:
    """How to call the endpoint directly, or None when it needs FastAPI's machinery."""
    if (dependant.query_params or dependant.header_params or dependant.cookie_params or dependant.body_params
            or dependant.background_tasks_param_name or dependant.response_param_name
            or dependant.websocket_param_name or dependant.http_connection_param_name
            or dependant.security_scopes_param_name):
        return None
    plan: list[tuple[str, Callable[[Request], Awaitable[Any]]]] = []
    for dep in dependant.dependencies:
        if dep.call not in _REQUEST_ONLY or dep.name is None:
            return None
        plan.append((dep.name, dep.call))  # type: ignore[arg-type]
    for param in dependant.path_params:
        if param.field_info.annotation is not str:
            return None
    return plan


def _returns_response(endpoint: Callable[..., Any]) -> bool:
    """Only an endpoint that builds its own Response may skip FastAPI's serialization."""
    try:
        returned = typing.get_type_hints(endpoint).get("return")
    except (NameError, TypeError):
        return False
    return isinstance(returned, type) and issubclass(returned, Response)


class ApiRoute(APIRoute):
    """Used by every router of the API (``APIRouter(route_class=ApiRoute)``)."""

    @property
    def fast_handler(self) -> Handler | None:
        """The endpoint called directly (authentication first), or None when it needs FastAPI's machinery."""
        plan = _fast_plan(self.dependant)
        if plan is None or not _returns_response(self.endpoint):
            return None
        return self.wrap(self._direct(self.endpoint, plan))

    def _direct(self, endpoint: Callable[..., Any],
                plan: list[tuple[str, Callable[[Request], Awaitable[Any]]]]) -> Handler:
        request_name = self.dependant.request_param_name
        path_names = [p.name for p in self.dependant.path_params]

        async def handler(request: Request) -> Response:
            kwargs: dict[str, Any] = {name: await call(request) for name, call in plan}
            if request_name:
                kwargs[request_name] = request
            for name in path_names:
                kwargs[name] = request.path_params[name]
            return await endpoint(**kwargs)  # type: ignore[no-any-return]

        return handler

    def get_route_handler(self) -> Handler:
        return self.fast_handler or self.wrap(super().get_route_handler())

    def wrap(self, handler: Handler) -> Handler:
        """Every handler of this route goes through here: the key before anything else."""
        if not declares(self.dependant, current_tenant):
            return handler

        async def authenticated(request: Request) -> Response:
            await current_tenant(request)
            return await handler(request)

        return authenticated


def _sample_path(route: APIRoute) -> str:
    """A concrete path the route matches (each parameter an ``x``)."""
    return "/".join("x" if part.startswith("{") else part for part in route.path_format.split("/"))


def lift_fast_routes(app: Any) -> list[str]:
    """Serve every fast endpoint of the included routers from the application's own route table, first.

    Generated, never written by hand: the ApiRoute stays the one declaration (and the OpenAPI entry);
    its lifted copy (not in the schema) answers the same requests, in the same order as before, unless
    an earlier route of another kind could match the same request (then it is left where it is).
    Returns the lifted ``METHOD path`` pairs."""
    ordered: list[BaseRoute] = []
    for entry in app.router.routes:
        router = getattr(entry, "original_router", None)
        ordered.extend(router.routes if router is not None else [entry])
    lifted: list[Route] = []
    names: list[str] = []
    for index, route in enumerate(ordered):
        if not isinstance(route, ApiRoute) or not route.methods:
            continue
        handler = route.fast_handler
        if handler is None:
            continue
        scope = {"type": "http", "path": _sample_path(route), "method": sorted(route.methods)[0]}
        if any(not isinstance(r, ApiRoute) or r.fast_handler is None
               for r in ordered[:index] if r.matches(scope)[0] is Match.FULL):
            continue
        lifted.append(Route(route.path, handler, methods=list(route.methods), include_in_schema=False))
        names.append(f"{','.join(sorted(route.methods))} {route.path}")
    app.router.routes[:0] = lifted
    return names
