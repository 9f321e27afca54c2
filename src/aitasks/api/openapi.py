"""The OpenAPI document, told the truth: request validation answers 400 with our error body, and the
task endpoints need a Bearer key.

FastAPI adds a ``422 HTTPValidationError`` response to every operation with parameters, but the
error handlers answer 400 ``ErrorBody`` instead; this swaps one for the other in the schema. The key
is checked inline (not as a FastAPI security dependency, which costs on every request), so the
security scheme is declared here, on every operation that answers 401: /docs then offers "Authorize".
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from aitasks.api.schemas import SUCCESS_RATE_HEADERS

BAD_REQUEST = {
    "description": "Invalid input: the body names the field and the reason.",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
}


# Every cursor this API gives is unpadded URL-safe base64 (jobs/pager.py): say so, so a client (and the
# fuzzer) knows the alphabet. Which cursors exist is the server's to say: another one answers 400 `cursor`.
CURSOR = {"type": "string", "pattern": "^[A-Za-z0-9_-]*$",
          "description": "Opaque: `next_cursor` (or the `next` link's) of the previous page, as it was given."}


def _describe_cursor(operation: dict[str, Any]) -> None:
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "query" and parameter.get("name") == "cursor":
            parameter["schema"] = {**CURSOR, "title": "Cursor"}


def _can_fail_validation(operation: dict[str, Any]) -> bool:
    """Only a body or a query/header parameter can be invalid; a string path parameter cannot."""
    return "requestBody" in operation or any(p.get("in") != "path" for p in operation.get("parameters", []))


def install_openapi(app: FastAPI) -> None:
    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes, tags=app.openapi_tags)
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                responses = operation.get("responses", {})
                if "HTTPValidationError" in str(responses.get("422", "")):  # FastAPI's, not one a route declares
                    responses.pop("422")
                    if _can_fail_validation(operation):
                        responses.setdefault("400", BAD_REQUEST)
                _describe_cursor(operation)
                if "RateLimit-Limit" in responses.get("429", {}).get("headers", {}):  # a submit: on success too
                    for code, response in responses.items():
                        if code.startswith("2"):
                            response.setdefault("headers", {}).update(SUCCESS_RATE_HEADERS)
                if "401" in responses:  # unless the route names its own (e.g. /metrics: the metrics token)
                    operation.setdefault("security", [{"bearer": []}])
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["bearer"] = {
            "type": "http", "scheme": "bearer", "description": "An API key: `aitasks keys create --tenant NAME`."}
        schemes["metricsToken"] = {
            "type": "http", "scheme": "bearer", "description": "`AITASKS_METRICS_TOKEN`, when the deployment sets one."}
        components = schema.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]
