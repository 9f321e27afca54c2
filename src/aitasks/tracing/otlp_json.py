"""An OTLP/HTTP span exporter in OTLP's JSON encoding (``Content-Type: application/json``).

Why not the OpenTelemetry project's own exporter: it encodes protobuf with ``opentelemetry-proto``, whose
versions that FastAPI's ``opentelemetry-api>=1.44`` allows need protobuf 5 or later, while MediaPipe (the
image models) needs protobuf below 5. OTLP/HTTP defines JSON as a second encoding of the same messages
(every OpenTelemetry Collector and most backends accept it), so this file writes that: the protobuf JSON
mapping with trace and span ids in hex, as the OTLP specification asks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx
import orjson
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

log = logging.getLogger("aitasks.tracing")

# OTLP's SpanKind numbers are the SDK's plus one (0 is UNSPECIFIED there).
_STATUS = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}


class OtlpJsonSpanExporter(SpanExporter):
    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url
        self._client = httpx.Client(timeout=timeout_s)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            r = self._client.post(self.url, content=orjson.dumps(encode(spans)),
                                  headers={"Content-Type": "application/json"})
        except httpx.HTTPError as exc:
            log.warning("traces: %d spans not exported to %s: %s", len(spans), self.url, exc)
            return SpanExportResult.FAILURE
        if r.status_code >= 300:
            log.warning("traces: %d spans refused by %s: HTTP %d", len(spans), self.url, r.status_code)
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._client.close()


def encode(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """An ``ExportTraceServiceRequest`` as JSON: spans grouped by resource, then by instrumentation scope."""
    by_resource: dict[int, tuple[Any, dict[tuple[str, str], list[dict[str, Any]]]]] = {}
    for span in spans:
        resource, scopes = by_resource.setdefault(id(span.resource), (span.resource, {}))
        scope = span.instrumentation_scope
        key = (scope.name, scope.version or "") if scope else ("", "")
        scopes.setdefault(key, []).append(_span(span))
    return {"resourceSpans": [
        {"resource": {"attributes": _attributes(resource.attributes)},
         "scopeSpans": [{"scope": {"name": name, "version": version}, "spans": items}
                        for (name, version), items in scopes.items()]}
        for resource, scopes in by_resource.values()]}


def _span(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    assert context is not None
    out: dict[str, Any] = {
        "traceId": f"{context.trace_id:032x}", "spanId": f"{context.span_id:016x}", "name": span.name,
        "kind": span.kind.value + 1, "startTimeUnixNano": str(span.start_time or 0),
        "endTimeUnixNano": str(span.end_time or 0), "attributes": _attributes(span.attributes or {}),
        "status": {"code": _STATUS[span.status.status_code], "message": span.status.description or ""},
    }
    if span.parent is not None:
        out["parentSpanId"] = f"{span.parent.span_id:016x}"
    if span.events:
        out["events"] = [{"name": e.name, "timeUnixNano": str(e.timestamp),
                          "attributes": _attributes(e.attributes or {})} for e in span.events]
    return out


def _attributes(attributes: Any) -> list[dict[str, Any]]:
    return [{"key": key, "value": _value(value)} for key, value in attributes.items()]


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}  # int64 is a string in the protobuf JSON mapping
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": str(value)}
