"""The worker's spans of a job, under its submit span (the ``traceparent`` in its record): the wait in the
queue (first run only: from acceptance to the start), the run, and each stage the job names in its
progress reports (``JobContext.progress(stage=...)``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace

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
