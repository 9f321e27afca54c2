"""Traces (aitasks/tracing): with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the API and the worker processes of a
real stack export their spans over OTLP/HTTP (JSON) to a collector, here a real HTTP server in the test
process that keeps what it receives (no OpenTelemetry Collector binary is on the registries). One trace per
job: the submit (API), the wait in the queue, each run (a retry is a second run in the same trace), each
stage a job names and each webhook delivery, parented as a reader of the trace expects."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from local_http import LocalServer, QuietHandler
from stack import poll, wait_status

pytestmark = pytest.mark.slow
CLIENT_TRACE, CLIENT_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


class Collector(LocalServer):
    """An OTLP/HTTP receiver: every POSTed ExportTraceServiceRequest, flattened to its spans."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.content_types: set[str] = set()
        self.webhooks: list[dict[str, str]] = []  # the headers of each webhook POSTed to /hook
        collector = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/hook":  # the job's webhook receiver, on the same server
                    collector.webhooks.append({k.lower(): v for k, v in self.headers.items()})
                    self.send_response(204)
                    self.end_headers()
                    return
                body = json.loads(raw)
                collector.content_types.add(self.headers["Content-Type"])
                for resource in body["resourceSpans"]:
                    service = next(a["value"]["stringValue"] for a in resource["resource"]["attributes"]
                                   if a["key"] == "service.name")
                    for scope in resource["scopeSpans"]:
                        for span in scope["spans"]:
                            attributes = {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}
                            collector.spans.append({**span, "service": service, "attributes": attributes})
                self.send_response(200 if self.path == "/v1/traces" else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

        super().__init__(Handler)

    def of_job(self, job_id: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["attributes"].get("aitasks.job_id") == job_id]

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        return [s for s in self.spans if s["traceId"] == trace_id]


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


def test_a_job_is_one_trace_from_its_submit_through_the_queue_to_each_run(make_stack: Any, collector: Collector) -> None:
    stack = make_stack({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
                        "OTEL_BSP_SCHEDULE_DELAY": "100"})
    with stack.client() as c:
        # The client's own trace (W3C traceparent): the job's spans join it. A transient failure, then a retry.
        hook = f"http://127.0.0.1:{collector.port}/hook"
        r = c.post("/api/v1/tasks/submit/", json={"task_type": "diagnostic", "parameters": {"fail_times": 1},
                                                  "webhook": hook},
                   headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        assert wait_status(c, task_id)["status"] == "SUCCESS"
        spans = poll(lambda: (s if len(s := collector.of_job(task_id)) >= 5 else None), "the job's spans", 30)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    assert sorted(by_name) == ["aitasks.queue_wait", "aitasks.run", "aitasks.submit", "aitasks.webhook"], by_name.keys()
    (root,) = by_name["aitasks.submit"]
    assert root["service"] == "aitasks-api" and root["traceId"] == CLIENT_TRACE
    (request,) = [s for s in collector.trace(CLIENT_TRACE) if s["spanId"] == root["parentSpanId"]]
    assert request["name"] == "POST /api/v1/tasks/submit/" and request["kind"] == 2  # FastAPI's server span
    assert request["parentSpanId"] == CLIENT_SPAN and request["service"] == "aitasks-api"
    assert collector.content_types == {"application/json"}
    assert {s["traceId"] for s in spans} == {CLIENT_TRACE}
    for span in by_name["aitasks.queue_wait"] + by_name["aitasks.run"]:
        assert span["service"] == "aitasks-worker" and span["parentSpanId"] == root["spanId"], span
    (wait,) = by_name["aitasks.queue_wait"]
    assert int(wait["startTimeUnixNano"]) <= int(wait["endTimeUnixNano"])
    runs = sorted(by_name["aitasks.run"], key=lambda s: int(s["startTimeUnixNano"]))
    assert [r["attributes"]["aitasks.attempt"] for r in runs] == ["1", "2"]  # int64 as a string (OTLP JSON)
    assert runs[-1]["attributes"]["aitasks.status"] == "SUCCESS"
    assert root["attributes"]["aitasks.task_type"] == "diagnostic"
    # The completed webhook: a client span under the submit, and its traceparent sent to the receiver.
    (delivery,) = by_name["aitasks.webhook"]
    assert delivery["service"] == "aitasks-worker" and delivery["parentSpanId"] == root["spanId"], delivery
    assert delivery["kind"] == 3 and delivery["attributes"]["aitasks.webhook.event"] == "completed"
    assert delivery["attributes"]["http.response.status_code"] == "204"
    assert delivery["attributes"]["server.address"] == f"http://127.0.0.1:{collector.port}"
    (sent,) = collector.webhooks
    assert sent["traceparent"] == f"00-{CLIENT_TRACE}-{delivery['spanId']}-01"


def test_a_documents_stages_are_spans_of_its_run(make_stack: Any, collector: Collector) -> None:
    stack = make_stack({"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.port}",
                        "OTEL_BSP_SCHEDULE_DELAY": "100"})
    with stack.client() as c:
        r = c.post("/api/v1/documents/", files={"file": ("policy.txt", b"Refunds are paid within 14 days.\n")},
                   data={"document_id": "policy"})
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        assert wait_status(c, task_id, timeout_s=120)["status"] == "SUCCESS"

        def stages() -> list[dict[str, Any]] | None:
            runs = [s for s in collector.of_job(task_id) if s["name"] == "aitasks.run"]
            if not runs:
                return None
            found = [s for s in collector.trace(runs[0]["traceId"]) if s["name"].startswith("aitasks.stage.")]
            return found if any(s["name"] == "aitasks.stage.store" for s in found) else None

        found = poll(stages, "the document's stage spans", 30)
    run = next(s for s in collector.of_job(task_id) if s["name"] == "aitasks.run")
    assert {s["parentSpanId"] for s in found} == {run["spanId"]}
    ordered = sorted(found, key=lambda s: int(s["startTimeUnixNano"]))
    names = [s["name"].removeprefix("aitasks.stage.") for s in ordered]
    assert names[-1] == "store" and "embed" in names and len(set(names)) == len(names), names
    for before, after in zip(ordered, ordered[1:]):  # one stage at a time: each ends as the next begins
        assert int(before["endTimeUnixNano"]) <= int(after["startTimeUnixNano"]), (before, after)
