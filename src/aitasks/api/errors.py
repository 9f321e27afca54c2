"""Every error answer has one body shape, seed-compatible: ``error`` is always the human sentence.

``{"error": "task_type is required", "code": "validation_error",
   "fields": [{"field": "task_type", "message": "required"}]}``
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from aitasks.errors import ApiError, FieldError, pydantic_fields, summary

log = logging.getLogger(__name__)


def error_body(message: str, code: str, fields: list[FieldError] | None = None,
               extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The one builder of an error body; every 4xx/5xx JSON answer of the API comes from here."""
    body: dict[str, Any] = {"error": message, "code": code}
    if fields:
        body["fields"] = [{"field": f.field, "message": f.message} for f in fields]
    if extra:
        body.update({k: v for k, v in extra.items() if k not in body})
    return body


METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at the request's path, asked of the app's router method by method
    (FastAPI keeps included routers as routes of their own, so a walk over the top-level routes misses
    theirs; and one path may be served by several routes: the lifted fast POST beside FastAPI's GET). A path
    that is a resource of its own (``/api/v1/documents/batch``) lists its own methods, not those of the
    templated one it also fits (``/api/v1/documents/{document_id}``)."""
    literal: set[str] = set()
    templated: set[str] = set()
    for method in METHODS:
        scope = {**request.scope, "method": method}
        for route in request.app.router.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                (templated if child.get("path_params") else literal).add(method)
                break
    return sorted(literal or templated)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.code, exc.fields, exc.extra), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _request_validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = pydantic_fields(list(exc.errors()))
        return JSONResponse(error_body(summary(fields), "validation_error", fields), 400)

    @app.exception_handler(ValidationError)
    async def _validation(_: Request, exc: ValidationError) -> JSONResponse:
        fields = pydantic_fields(list(exc.errors()))
        return JSONResponse(error_body(summary(fields), "validation_error", fields), 400)

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def _redis_down(_: Request, exc: Exception) -> JSONResponse:
        log.warning("Redis unreachable: %s", exc)
        return JSONResponse(
            error_body("The job store (Redis) is unreachable; nothing was accepted. Try again shortly.",
                       "unavailable"), 503, headers={"Retry-After": "2"})

    @app.exception_handler(redis.ResponseError)
    async def _redis_refused(_: Request, exc: redis.ResponseError) -> JSONResponse:
        # A Redis at its maxmemory (noeviction) refuses writes with OOM; redis-py raises OutOfMemoryError
        # (prefix stripped), the API's pipelined client a ResponseError starting with OOM.
        if isinstance(exc, redis.OutOfMemoryError) or str(exc).startswith("OOM"):
            log.error("Redis is out of memory (its maxmemory): %s", exc)
            return JSONResponse(
                error_body("The job store (Redis) is out of memory (maxmemory reached); nothing was accepted. "
                           "Try again later.", "unavailable"),
                503, headers={"Retry-After": "30"})
        log.exception("unhandled Redis error")
        return JSONResponse(error_body("Internal error; it was logged.", "internal_error"), 500)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "No such endpoint"
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return JSONResponse(error_body(message, code), exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body("Internal error; it was logged.", "internal_error"), 500)
