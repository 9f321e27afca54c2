"""The worker's spans of a job, under its submit span (the ``traceparent`` in its record): the wait in the
queue (first run only: from acceptance to the start), the run, each stage the job names in its
progress reports (``JobContext.progress(stage=...)``), and each webhook delivery attempt."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from aitasks.jobs.models import Job
from aitasks.tracing import parent_context, tracer


@contextmanager
def run_span(job: Job, attempt: int, delivery: int) -> Iterator[None]:
    parent = parent_context(job.traceparent)
    attributes = {"aitasks.job_id": job.id, "aitasks.task_type": job.type, "aitasks.tenant": job.tenant,
                  "aitasks.queue": job.queue}
    if attempt == 1 and delivery == 1:
        tracer.start_span("aitasks.queue_wait", context=parent, attributes=attributes,
                          start_time=int(job.created_at * 1e9)).end()
    with tracer.start_as_current_span("aitasks.run", context=parent, attributes={
            **attributes, "aitasks.attempt": attempt, "aitasks.delivery": delivery}):
        yield


@contextmanager
def webhook_span(job: Job, event: str, attempt: int, receiver: str) -> Iterator[trace.Span]:
    """One delivery attempt, a client span in the job's trace; ``receiver`` is scheme://host:port only
    (a webhook URL's path or query may hold a receiver's secret)."""
    with tracer.start_as_current_span("aitasks.webhook", context=parent_context(job.traceparent),
                                      kind=SpanKind.CLIENT, attributes={
            "aitasks.job_id": job.id, "aitasks.task_type": job.type, "aitasks.tenant": job.tenant,
            "aitasks.webhook.event": event, "aitasks.webhook.attempt": attempt, "server.address": receiver}) as span:
        yield span


def mark_delivery(span: trace.Span, status_code: int | None, delivered: bool, error: str | None) -> None:
    if status_code is not None:
        span.set_attribute("http.response.status_code", status_code)
    if not delivered:
        span.set_status(StatusCode.ERROR, error or f"answered {status_code}")


def mark_end(status: str) -> None:
    """The job's end on the current run span (nothing when tracing is off)."""
    trace.get_current_span().set_attribute("aitasks.status", status)


class StageSpans:
    """One span per stage of a run, each ended when the next begins or the run ends."""

    def __init__(self) -> None:
        self._current: tuple[str, trace.Span] | None = None

    def enter(self, stage: str | None) -> None:
        if (self._current[0] if self._current else None) == stage:
            return
        self.close()
        if stage:
            self._current = (stage, tracer.start_span(f"aitasks.stage.{stage}", attributes={"aitasks.stage": stage}))

    def close(self) -> None:
        if self._current is not None:
            self._current[1].end()
            self._current = None
