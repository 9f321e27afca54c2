"""The job domain: status values, the job record and the views clients see of it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson


class Status(StrEnum):
    """A job's state, with the seeds' spelling."""

    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    RETRY = "RETRY"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    REVOKED = "REVOKED"

    def is_terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.SUCCESS, Status.FAILURE, Status.REVOKED})

STATUS_MESSAGES = {
    Status.PENDING: "Task is waiting in queue",
    Status.PROCESSING: "Task is processing",
    Status.RETRY: "Task failed and will be retried",
    Status.SUCCESS: "Task completed successfully",
    Status.FAILURE: "Task failed",
    Status.REVOKED: "Task was cancelled",
}


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Artifact:
    """A file a job produced, stored outside Redis; the record keeps only this reference."""

    name: str
    media_type: str
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "media_type": self.media_type, "bytes": self.bytes}


@dataclass
class Job:
    """One job record, as stored in its Redis hash."""

    id: str
    type: str
    tenant: str
    queue: str
    status: Status = Status.PENDING
    progress: int = 0
    message: str = ""
    stage: str | None = None  # the step named with the last progress report (JobContext.progress)
    attempts: int = 0
    deliveries: int = 0
    finished_deliveries: int = 0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    result: dict[str, Any] | None = None
    input: dict[str, Any] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)
    cancel_requested_at: float | None = None
    seq: int = 0
    retention_s: int = 3600
    soft_time_limit_s: float = 240
    time_limit_s: float = 300
    max_retries: int = 3
    webhook: str | None = None  # where the job's status document is POSTed (see worker/webhooks.py)
    webhook_events: tuple[str, ...] = ()  # of "start", "progress", "completed"
    # What the webhook is sent: None, the status document; "replicate", the prediction object (a job
    # submitted through /v1/predictions). Its links start with ``webhook_base``, the API's URL at submit.
    webhook_format: str | None = None
    webhook_base: str | None = None
    worker: str | None = None  # the Celery node that last started it
    # Child jobs (see worker/children.py): a child names its parent; a parent lists its children.
    parent: str | None = None
    children: list[str] = field(default_factory=list)
    # A document_ingestion job's document record key: the UPDATE script marks the record when the job ends.
    document: str | None = None
    # The W3C trace context of its submit (aitasks/tracing): every run of the job joins that trace.
    traceparent: str | None = None
    # Its place within its tenant's share of the workers (jobs/dispatch.py): high, normal or low.
    priority: str = "normal"

    # --- Redis hash encoding ---------------------------------------------------------------------

    def to_hash(self) -> dict[str, str]:
        out = {
            "id": self.id,
            "type": self.type,
            "tenant": self.tenant,
            "queue": self.queue,
            "status": self.status.value,
            "progress": str(self.progress),
            "message": self.message,
            "attempts": str(self.attempts),
            "deliveries": str(self.deliveries),
            "finished_deliveries": str(self.finished_deliveries),
            "created_at": repr(self.created_at),
            "input": orjson.dumps(self.input).decode(),
            "seq": str(self.seq),
            "retention_s": str(self.retention_s),
            "soft_time_limit_s": repr(self.soft_time_limit_s),
            "time_limit_s": repr(self.time_limit_s),
            "max_retries": str(self.max_retries),
        }
        if self.webhook:
            out["webhook"] = self.webhook
            # Comma-framed so the UPDATE script can test membership with a plain find.
            out["webhook_events"] = "," + ",".join(self.webhook_events) + ","
            if self.webhook_format:
                out["webhook_format"] = self.webhook_format
            if self.webhook_base:
                out["webhook_base"] = self.webhook_base
        if self.parent:
            out["parent"] = self.parent
        if self.document:
            out["document"] = self.document
        if self.stage:
            out["stage"] = self.stage
        if self.traceparent:
            out["traceparent"] = self.traceparent
        if self.priority != "normal":
            out["priority"] = self.priority
        return out

    @classmethod
    def from_hash(cls, raw: dict[Any, Any]) -> Job:
        h = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
             for k, v in raw.items()}

        def opt_float(name: str) -> float | None:
            value = h.get(name)
            return float(value) if value else None

        result = h.get("result")
        artifacts = h.get("artifacts")
        return cls(
            id=h["id"],
            type=h["type"],
            tenant=h["tenant"],
            queue=h.get("queue", "cpu"),
            status=Status(h.get("status", "PENDING")),
            progress=int(h.get("progress", 0)),
            message=h.get("message", ""),
            stage=h.get("stage") or None,
            attempts=int(h.get("attempts", 0)),
            deliveries=int(h.get("deliveries", 0)),
            finished_deliveries=int(h.get("finished_deliveries", 0)),
            created_at=float(h.get("created_at", 0)),
            started_at=opt_float("started_at"),
            finished_at=opt_float("finished_at"),
            error_type=h.get("error_type") or None,
            error_message=h.get("error_message") or None,
            result=orjson.loads(result) if result else None,
            input=orjson.loads(h.get("input") or "{}"),
            artifacts=[Artifact(**a) for a in orjson.loads(artifacts)] if artifacts else [],
            cancel_requested_at=opt_float("cancel_requested_at"),
            seq=int(h.get("seq", 0)),
            retention_s=int(h.get("retention_s", 3600)),
            soft_time_limit_s=float(h.get("soft_time_limit_s", 240)),
            time_limit_s=float(h.get("time_limit_s", 300)),
            max_retries=int(h.get("max_retries", 3)),
            webhook=h.get("webhook") or None,
            webhook_events=tuple(e for e in h.get("webhook_events", "").split(",") if e),
            webhook_format=h.get("webhook_format") or None,
            webhook_base=h.get("webhook_base") or None,
            worker=h.get("worker") or None,
            parent=h.get("parent") or None,
            children=orjson.loads(h["children"]) if h.get("children") else [],
            document=h.get("document") or None,
            traceparent=h.get("traceparent") or None,
            priority=h.get("priority") or "normal",
        )

    # --- views -----------------------------------------------------------------------------------

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)

    def status_view(self) -> dict[str, Any]:
        """The seeds' status shape, plus our extensions (extra keys old clients ignore)."""
        view: dict[str, Any] = {
            "task_id": self.id,
            "status": self.status.value,
            "progress": self.progress,
            "message": self.message or STATUS_MESSAGES[self.status],
            "result_available": self.status is Status.SUCCESS,
            "task_type": self.type,
            "queue": self.queue,
            "priority": self.priority,
            "attempts": self.attempts,
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
        }
        if self.error_message is not None:
            view["error"] = self.error_message
            view["error_type"] = self.error_type
        if self.cancel_requested_at is not None and not self.status.is_terminal():
            view["cancel_requested"] = True
        if self.worker:
            view["worker"] = self.worker
        if self.parent:
            view["parent"] = self.parent
        if self.children:
            view["children"] = self.children
        return view
