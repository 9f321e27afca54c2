"""Child jobs: a job that fans out into other jobs and resumes once they have all ended.

A chord built on the job store, because aitasks runs Celery without a result backend (Celery's own
``chord`` needs one) and a task must never block waiting for subtasks (with concurrency-1 workers
that deadlocks; Celery's docs warn against it):

1. The parent's first run calls ``ctx.fan_out(specs)``. The children (real jobs with ``parent`` set
   and ids derived from the parent's, ``<parent>.<n>``) are recorded and queued on their own types'
   queues in one Lua step (``scripts.FAN_OUT``), together with the parent's callback message. A
   redelivered parent finds them recorded and creates nothing. The run returns ``Deferred``: the
   runner leaves the parent PROCESSING and acknowledges the message.
2. Every terminal write of a child, whoever makes it (worker, API cancel, monitor, hard time limit),
   goes through ``scripts.UPDATE``, which increments the parent's ``children_done`` and sets its
   progress; the last child's end pushes the callback message onto the parent's queue, atomically.
3. The callback is the parent's own ``aitasks.run_job`` message: the type's function runs again,
   sees every child ended (``ctx.children()``) and returns its result, which finishes the parent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aitasks.errors import JobCancelled, JobError
from aitasks.jobs.artifacts import ArtifactBackend, media_type_for
from aitasks.jobs.messages import job_message
from aitasks.jobs.models import Job
from aitasks.jobs.store import JobStore
from aitasks.processors.registry import load_all
from aitasks.settings import get_settings


@dataclass(frozen=True)
class ChildSpec:
    """One child job: its type, its input (file fields as FileRef dicts) and the files they name."""

    task_type: str
    input: dict[str, Any]
    files: dict[str, bytes] = field(default_factory=dict)  # artifact name -> bytes, stored under the child


class Deferred(dict[str, Any]):
    """Returned by a job function that waits for its children: the runner leaves the job PROCESSING,
    unfinished. A dict, so a job function keeps one return type."""

    def __init__(self, children: int, created: bool):
        super().__init__(deferred=True, children=children, created=created)  # created False: a redelivery

    @property
    def children(self) -> int:
        return int(self["children"])


def child_id(parent_id: str, index: int) -> str:
    """Deterministic, so a redelivered parent names the same children (and the script finds them)."""
    return f"{parent_id}.{index + 1}"


def fan_out(parent: Job, store: JobStore, artifacts: ArtifactBackend, specs: list[ChildSpec],
            waiting_message: str | None, check_cancel: Callable[[], None]) -> Deferred:
    """Record and queue the children of ``parent`` once (``JobContext.fan_out`` is the caller)."""
    if not specs:
        raise ValueError("fan_out needs at least one child (with none, nothing would call the parent back)")
    settings = get_settings()
    registry = load_all()
    now = time.time()
    children: list[tuple[Job, str]] = []
    for index, spec in enumerate(specs):
        jt = registry.get(spec.task_type)
        if jt is None:
            raise JobError(f"child {index + 1}: this worker does not know job type {spec.task_type!r}")
        data = jt.input_model.model_validate(spec.input)
        limits = jt.limits(settings)
        cid = child_id(parent.id, index)
        for name, raw in spec.files.items():  # idempotent: a redelivery rewrites the same files
            artifacts.save(cid, name, raw, media_type_for(name), tenant=parent.tenant)  # before its record: named
        child = Job(id=cid, type=jt.name, tenant=parent.tenant, queue=jt.queue_for(data), created_at=now,
                    input=data.model_dump(mode="json", exclude_none=True), retention_s=limits["retention_s"],
                    soft_time_limit_s=limits["soft_time_limit_s"], time_limit_s=limits["time_limit_s"],
                    max_retries=limits["max_retries"], parent=parent.id)
        children.append((child, job_message(cid, child.queue, child.soft_time_limit_s, child.time_limit_s)))
    callback = job_message(parent.id, parent.queue, parent.soft_time_limit_s, parent.time_limit_s)
    check_cancel()
    outcome = store.fan_out(parent, children, callback, settings.pending_ttl_s,
                            waiting_message or f"Waiting for {len(children)} child jobs")
    if outcome == -2:
        raise JobCancelled("cancelled before its child jobs were created")
    return Deferred(len(children), created=outcome == 1)
