"""The API's routes as a whole: one route class, the key checked before any body, documented answers.

Every answer the suite's HTTP clients get is checked against the OpenAPI document (tests/openapi_check.py);
these tests check the document itself and that the check can fail.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from aitasks.api.app import create_app
from aitasks.api.routing import ApiRoute, declares
from aitasks.api.deps import current_tenant
from openapi_check import OpenApiCheck, ResponseMismatch
from stack import Stack


@pytest.fixture(scope="module")
def app_routes() -> list[Any]:
    app = create_app()
    routes: list[Any] = []
    for included in app.routes:
        router = getattr(included, "original_router", None)
        routes.extend(router.routes if router is not None else [included])
    return routes


@pytest.fixture(scope="module")
def document(stack: Stack) -> dict[str, Any]:
    return httpx.get(f"{stack.url}/openapi.json").json()  # type: ignore[no-any-return]


def test_every_api_route_uses_the_one_route_class(app_routes: list[Any]) -> None:
    plain = [r.path for r in app_routes if isinstance(r, APIRoute) and not isinstance(r, ApiRoute)]
    assert plain == []
    authenticated = [r for r in app_routes if isinstance(r, ApiRoute) and declares(r.dependant, current_tenant)]
    assert len(authenticated) >= 30  # the key is declared the one way, as the Tenant dependency


def test_the_submit_paths_skip_fastapis_per_request_machinery() -> None:
    """The hot paths are served from the application's own route table (generated from their ApiRoute),
    ahead of the included routers; a route with query parameters keeps FastAPI's handling."""
    app = create_app()
    first = {(r.path, m) for r in app.router.routes if isinstance(r, Route) and not isinstance(r, APIRoute)
             for m in (r.methods or ())}
    for path in ("/api/v1/tasks/submit/", "/api/visualizations", "/v1/predictions", "/api/v1/documents/"):
        assert (path, "POST") in first
    assert ("/api/v1/tasks/{task_id}/status/", "GET") in first
    assert ("/api/v1/tasks/", "GET") not in first  # list: query parameters, validated by FastAPI


@pytest.mark.parametrize("method,path,body", [
    ("POST", "/api/v1/tasks/submit/", b"{not json"),
    ("POST", "/api/v1/search", b"{not json"),
    ("POST", "/v1/predictions", b"{not json"),
    ("POST", "/api/visualizations", b"{not json"),
    ("POST", "/api/v1/documents/", b"--x\r\nbroken multipart"),
])
def test_the_key_is_checked_before_the_body_is_read(stack: Stack, method: str, path: str, body: bytes) -> None:
    """An anonymous caller gets 401 whatever it sends: its body is never parsed."""
    content_type = "multipart/form-data; boundary=x" if b"multipart" in body else "application/json"
    r = httpx.request(method, stack.url + path, content=body, headers={"Content-Type": content_type})
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"


def test_every_json_answer_is_documented_with_a_schema(document: dict[str, Any]) -> None:
    missing = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                content = response.get("content", {})
                if "application/json" in content and "schema" not in content["application/json"]:
                    missing.append(f"{method.upper()} {path} {status}")
                if status.startswith("2") and status != "204" and not content:
                    missing.append(f"{method.upper()} {path} {status} (no content)")
    assert missing == []


def test_the_answer_check_refuses_drift(document: dict[str, Any]) -> None:
    """The check that runs on every answer in the suite can fail: an unlisted field, a wrong type, a
    missing required field, an undocumented status."""
    check = OpenApiCheck(document)
    good = {"task_id": "x", "status": "REVOKED", "message": "Task cancelled successfully"}
    check.check("POST", "/api/v1/tasks/x/cancel/", 200, "application/json", good)
    with pytest.raises(ResponseMismatch, match="unexpected"):
        check.check("POST", "/api/v1/tasks/x/cancel/", 200, "application/json", good | {"surprise": 1})
    with pytest.raises(ResponseMismatch, match="status"):
        check.check("POST", "/api/v1/tasks/x/cancel/", 200, "application/json", good | {"status": "DONE"})
    with pytest.raises(ResponseMismatch, match="required"):
        check.check("POST", "/api/v1/tasks/x/cancel/", 200, "application/json", {"task_id": "x"})
    with pytest.raises(ResponseMismatch, match="does not document"):
        check.check("POST", "/api/v1/tasks/x/cancel/", 418, "application/json", good)
