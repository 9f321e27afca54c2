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

from aitasks.errors import ApiError, FieldError

log = logging.getLogger(__name__)


def error_body(message: str, code: str, fields: list[FieldError] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": message, "code": code}
    if fields:
        body["fields"] = [{"field": f.field, "message": f.message} for f in fields]
    return body


def field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def pydantic_fields(errors: list[Any], prefix: str = "") -> list[FieldError]:
    fields = []
    for e in errors:
        path = field_path(tuple(e.get("loc", ())))
        if prefix:
            path = f"{prefix}.{path}" if path != "body" else prefix
        msg = e.get("msg", "invalid")
        if e.get("type") == "missing":
            msg = "is required"
        elif e.get("type") == "extra_forbidden":
            msg = "is not a known field"
        fields.append(FieldError(path, msg))
    return fields


def summary(fields: list[FieldError]) -> str:
    first = fields[0]
    text = f"{first.field} {first.message}" if first.message.startswith("is ") else f"{first.field}: {first.message}"
    return text + (f" (and {len(fields) - 1} more)" if len(fields) > 1 else "")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.code, exc.fields), exc.status, headers=exc.headers)

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

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = "No such endpoint"
        return JSONResponse(error_body(message, code), exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body("Internal error; it was logged.", "internal_error"), 500)
