"""Error reports (aitasks/error_reports.py): with ``SENTRY_DSN`` set, a bug in a job (an unexpected exception)
reaches Sentry with the job's id, type and tenant as tags, and a job failing as designed does not. The DSN
points at a real HTTP server in the test process that keeps the envelopes the SDK posts (Sentry itself
cannot run here); the sentry-sdk in the worker is the real one."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest

from local_http import LocalServer, QuietHandler
from stack import poll, submit, wait_status

pytestmark = pytest.mark.slow


class Envelopes(LocalServer):
    """A Sentry ingest endpoint: the events of every envelope POSTed to /api/<project>/envelope/."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        events = self.events

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                elif self.headers.get("Content-Encoding") == "br":
                    import brotli  # type: ignore[import-not-found]

                    body = brotli.decompress(body)
                lines = body.split(b"\n")
                for header, payload in zip(lines[1::2], lines[2::2]):  # after the envelope's own header
                    if json.loads(header).get("type") == "event":
                        events.append(json.loads(payload))
                self.send_response(200)
                self.end_headers()

        super().__init__(Handler)

    @property
    def dsn(self) -> str:
        return f"http://public@127.0.0.1:{self.port}/1"


@pytest.fixture
def envelopes() -> Iterator[Envelopes]:
    e = Envelopes()
    yield e
    e.close()


def test_a_bug_in_a_job_is_reported_with_its_job_type_and_tenant(make_stack: Any, envelopes: Envelopes) -> None:
    stack = make_stack({"SENTRY_DSN": envelopes.dsn, "SENTRY_ENVIRONMENT": "test-suite"})
    with stack.client(tenant="acme-reports") as c:
        designed = submit(c, parameters={"fail": True})  # a failure the job type means: not a bug
        assert wait_status(c, designed)["status"] == "FAILURE"
        bug = submit(c, parameters={"raise_bug": True})
        final = wait_status(c, bug)
        assert final["status"] == "FAILURE" and final["error_type"] == "ZeroDivisionError", final
        event = poll(lambda: next((e for e in envelopes.events if e.get("tags", {}).get("job_id") == bug), None),
                     "the bug's report", 30)
    tags = event["tags"]
    assert (tags["task_type"], tags["tenant"], tags["component"]) == ("diagnostic", "acme-reports", "worker"), tags
    assert event["environment"] == "test-suite" and event["release"].startswith("aitasks@"), event
    values = event["exception"]["values"]
    assert values[-1]["type"] == "ZeroDivisionError" and "raise_bug" in values[-1]["value"], values
    assert not [e for e in envelopes.events if e.get("tags", {}).get("job_id") == designed]


def test_an_unexpected_error_in_the_api_is_a_500_and_a_report(make_stack: Any, envelopes: Envelopes) -> None:
    """A job record Redis holds in the wrong type (a corrupt key, as a stray client could leave it): reading
    it raises WRONGTYPE, which no handler expects: the client gets the seeds' 500 body, Sentry the error."""
    from aitasks.jobs import keys

    stack = make_stack({"SENTRY_DSN": envelopes.dsn})
    with stack.client(tenant="acme-api-bug") as c:
        task_id = submit(c)
        assert wait_status(c, task_id)["status"] == "SUCCESS"
        stack.redis.delete(keys.job(task_id))
        stack.redis.rpush(keys.job(task_id), "not a job record")
        r = c.get(f"/api/v1/tasks/{task_id}/status/")
        assert r.status_code == 500 and r.json()["code"] == "internal_error", r.text
        assert "WRONGTYPE" not in r.text  # the details go to the report, not to the client
        event = poll(lambda: next((e for e in envelopes.events if e.get("tags", {}).get("component") == "api"), None),
                     "the API's report", 30)
        assert wait_status(c, submit(c))["status"] == "SUCCESS"  # and the service goes on
    assert "WRONGTYPE" in json.dumps(event), event
