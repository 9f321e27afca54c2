"""OpenTelemetry traces of a job: the submit (API), the wait in the queue, the run and each stage of it
(worker), each webhook delivery attempt (worker), one trace per job, its context carried in the job's record (``traceparent``) so every delivery
of the job, a retry or a recovery's, joins the same trace.

Off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set: then each
process exports its spans over OTLP/HTTP to ``<endpoint>/v1/traces``, in OTLP's JSON encoding
(tracing/otlp_json.py says why not protobuf), batched by the SDK (``OTEL_BSP_*`` settings apply). Off, the
API's no-op tracer costs a few microseconds a job and ``traceparent`` stays unset.
"""

from __future__ import annotations

import atexit
import logging
import os

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("aitasks.tracing")

tracer = trace.get_tracer("aitasks")  # a proxy: it follows the provider set by setup(), if any
_propagator = TraceContextTextMapPropagator()


def endpoint() -> str | None:
    """Where spans go (``/v1/traces`` included), or None: tracing is off."""
    traces = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if traces:
        return traces
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    return base.rstrip("/") + "/v1/traces" if base else None


def setup(service: str) -> bool:
    """Export this process's spans when an endpoint is set (once per process; a prefork pool's children
    inherit it: the SDK's batch processor starts its thread again after a fork)."""
    url = endpoint()
    if not url or getattr(setup, "done", False):
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    from aitasks.tracing.otlp_json import OtlpJsonSpanExporter

    name = os.environ.get("OTEL_SERVICE_NAME") or f"aitasks-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OtlpJsonSpanExporter(url)))
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)  # what is still batched goes out at a clean exit
    setup.done = True  # type: ignore[attr-defined]
    log.info("traces: exported to %s as %s", url, name)
    return True


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or None (tracing off: no valid span)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")


def inject(headers: dict[str, str]) -> None:
    """Add the current span's ``traceparent`` to outgoing headers (nothing when tracing is off)."""
    _propagator.inject(headers)


def parent_context(traceparent: str | None) -> Context | None:
    """The context a job's spans hang under (its submit span), from the ``traceparent`` in its record."""
    return _propagator.extract({"traceparent": traceparent}) if traceparent else None
