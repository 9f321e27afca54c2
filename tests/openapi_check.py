"""Every answer a test gets from the API is checked against the OpenAPI document the API publishes.

The routes return JSON directly (for speed), so FastAPI's ``response_model`` checks nothing at run time;
this does, in the tests: ``Stack.client()`` installs :meth:`OpenApiCheck.hook` on its httpx client, and an
answer whose status the operation does not document, or whose JSON body does not fit the documented
schema, fails the test that got it. Objects are checked strictly: a field the schema does not list is a
drift (a model that says ``additionalProperties`` may have more).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

import httpx
from jsonschema import Draft202012Validator

# Answers any operation may give without listing them: the body-size guard (middleware, before routing),
# an unexpected error, and the job store unreachable. Their body is still checked as ErrorBody.
ANY_OPERATION = {"413", "500", "503"}


class ResponseMismatch(AssertionError):
    """Raised when an answer does not match the API's own OpenAPI document."""


def _strict(node: Any) -> Any:
    """A copy of a schema where every object with listed properties refuses the unlisted ones."""
    if isinstance(node, dict):
        out = {k: _strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


class OpenApiCheck:
    def __init__(self, document: dict[str, Any]):
        self.document = document
        self.components = _strict(copy.deepcopy(document.get("components", {})))
        self.operations: list[tuple[re.Pattern[str], str, dict[str, Any]]] = []
        for path, methods in document["paths"].items():
            pattern = re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", path) + "$")
            for method, operation in methods.items():
                self.operations.append((pattern, method.upper(), operation))
        self.checked = 0

    def operation(self, method: str, path: str) -> dict[str, Any] | None:
        for candidate in (path, path + "/"):  # the seeds' no-slash aliases are served, not documented
            for pattern, m, operation in self.operations:
                if m == method and pattern.match(candidate):
                    return operation
        return None

    def check(self, method: str, path: str, status: int, content_type: str, body: Any) -> None:
        operation = self.operation(method, path)
        if operation is None:
            return  # not an API operation (the dashboard's files, /docs)
        responses = operation.get("responses", {})
        documented = responses.get(str(status)) or responses.get("default")
        if documented is None and str(status) in ANY_OPERATION:
            documented = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
        if documented is None:
            raise ResponseMismatch(f"{method} {path} answered {status}, which its operation does not document "
                                   f"(documented: {sorted(responses)})")
        if not content_type.startswith("application/json"):
            return
        schema = documented.get("content", {}).get("application/json", {}).get("schema")
        if schema is None:
            return
        root = {**_strict(schema), "components": self.components}
        errors = sorted(Draft202012Validator(root).iter_errors(body), key=lambda e: list(e.path))
        if errors:
            first = errors[0]
            where = "/".join(str(p) for p in first.path) or "(body)"
            raise ResponseMismatch(f"{method} {path} answered {status} with a body that does not match its "
                                   f"documented schema at {where}: {first.message}")
        self.checked += 1

    def hook(self) -> Callable[[httpx.Response], None]:
        def on_response(response: httpx.Response) -> None:
            if response.request.method == "GET" and "text/event-stream" in response.headers.get("content-type", ""):
                return  # a stream: its events are checked by the stream tests
            response.read()
            try:
                body = response.json() if response.content else None
            except ValueError:
                body = None
            self.check(response.request.method, response.request.url.path, response.status_code,
                       response.headers.get("content-type", ""), body)

        return on_response


_checks: dict[str, OpenApiCheck] = {}


def check_for(base_url: str) -> OpenApiCheck:
    """One check per deployment, from the document that deployment serves."""
    if base_url not in _checks:
        _checks[base_url] = OpenApiCheck(httpx.get(f"{base_url}/openapi.json", timeout=30).json())
    return _checks[base_url]
