"""What the sync and asyncio clients share, without I/O: settings, requests, deadlines, outcomes."""

from __future__ import annotations

import json
import mimetypes
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, NoReturn

import httpx

from aitasks.client import sse
from aitasks.client.errors import (
    ApiError,
    DocumentFailed,
    JobCancelled,
    JobFailed,
    NotFound,
    Unauthorized,
    WaitTimeout,
    raise_for,
)

TERMINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
DEFAULT_URL = "http://127.0.0.1:8000"
CLIENT_VARIABLES = ("AITASKS_URL", "AITASKS_API_KEY")  # read by the client and the CLI, not the service
FileInput = str | Path | bytes | BinaryIO


def resolve(url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """Explicit arguments, else AITASKS_URL and AITASKS_API_KEY, else the local default URL."""
    env_url, env_key = (os.environ.get(name) for name in CLIENT_VARIABLES)
    return (url or env_url or DEFAULT_URL).rstrip("/"), api_key or env_key


def headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@dataclass
class SubmitRequest:
    """httpx keyword arguments for one submit: JSON without files, multipart with them."""

    kwargs: dict[str, Any]


def _read(value: FileInput) -> tuple[str, bytes, str]:
    if isinstance(value, bytes):
        return "upload", value, "application/octet-stream"
    if isinstance(value, (str, Path)):
        path = Path(value)
        return path.name, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    name = Path(getattr(value, "name", "upload")).name
    return name, value.read(), mimetypes.guess_type(name)[0] or "application/octet-stream"


def is_file(value: Any) -> bool:
    return isinstance(value, (bytes, Path)) or hasattr(value, "read")


def submit_request(task_type: str, inputs: dict[str, Any], idempotency_key: str | None,
                   wait_s: float | None = None) -> SubmitRequest:
    """``inputs`` are the seed-shaped fields (``prompt``, ``parameters``, ...); a bytes, Path or file
    object value is uploaded as a multipart file part. Every submit carries an Idempotency-Key, so
    a retry after a lost connection cannot create a second job."""
    hdrs = {"Idempotency-Key": idempotency_key or f"client-{uuid.uuid4()}"}
    if wait_s:
        hdrs["Prefer"] = f"wait={wait_s:g}"
    files = {k: _read(v) for k, v in inputs.items() if is_file(v)}
    fields = {k: v for k, v in inputs.items() if k not in files and v is not None}
    if not files:
        return SubmitRequest({"json": {"task_type": task_type, **fields}, "headers": hdrs})
    form = {"task_type": task_type}
    for k, v in fields.items():
        form[k] = json.dumps(v) if isinstance(v, (dict, list)) else str(v)
    return SubmitRequest({"data": form, "files": files, "headers": hdrs})


DOCUMENTS = "/api/v1/documents"


def upload_request(file: FileInput, document_id: str | None, metadata: dict[str, Any] | None) -> dict[str, Any]:
    """httpx keyword arguments for one document upload (multipart ``file``, optional id and metadata)."""
    data = {k: v for k, v in (("document_id", document_id),
                              ("metadata", json.dumps(metadata) if metadata else None)) if v is not None}
    return {"files": {"file": _read(file)}, "data": data}


def search_body(query: str, top_k: int, document_ids: list[str] | None,
                filters: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"query": query, "top_k": top_k}
    if document_ids is not None:
        body["document_ids"] = document_ids
    if filters:
        body["filters"] = filters
    return body


def document_outcome(status: dict[str, Any]) -> dict[str, Any] | None:
    """The status when the ingestion ended well, None while it runs; raises DocumentFailed."""
    if status.get("status") == "completed":
        return status
    if status.get("status") == "failed":
        raise DocumentFailed(status)
    return None


POLL_S = 0.25  # how often a wait polls the status when no event stream can be had
EVENTS = "/api/v1/tasks/{}/events"


@dataclass
class Deadline:
    """When a wait gives up (``seconds=None``: never)."""

    seconds: float | None
    start: float = field(default_factory=time.monotonic)

    def remaining(self) -> float | None:
        return None if self.seconds is None else max(0.0, self.start + self.seconds - time.monotonic())

    def passed(self) -> bool:
        return self.remaining() == 0.0

    def pause(self, seconds: float) -> float:
        """``seconds``, or less when the deadline comes sooner."""
        remaining = self.remaining()
        return seconds if remaining is None else min(seconds, remaining)

    def expired(self, job_id: str, last: dict[str, Any]) -> WaitTimeout:
        return WaitTimeout(f"job {job_id} still {last.get('status')} after {self.seconds:g} s")


def stream_timeout(base: httpx.Timeout, deadline: Deadline) -> httpx.Timeout:
    """The client's timeouts, but a read may wait as long as the deadline allows (the service sends a
    keepalive comment every 15 s, so a healthy stream is never silent for long)."""
    return httpx.Timeout(connect=base.connect, read=deadline.remaining(), write=base.write, pool=base.pool)


class StreamUnavailable(Exception):
    """No event stream here: a wait polls the status instead; ``error`` is what the answer means."""

    def __init__(self, error: ApiError):
        super().__init__(str(error))
        self.error = error


def is_event_stream(response: httpx.Response) -> bool:
    return response.status_code == 200 and response.headers.get("content-type", "").startswith(sse.MEDIA_TYPE)


def refuse(response: httpx.Response) -> NoReturn:
    """For an answer that is not the event stream (its body read): the ApiError of a 401 or 404, which
    a wait cannot get past either; StreamUnavailable for anything else (a proxy's 502, a 503, ...)."""
    try:
        raise_for(response)
    except (Unauthorized, NotFound):
        raise
    except ApiError as exc:
        raise StreamUnavailable(exc) from exc
    kind = response.headers.get("content-type")
    raise StreamUnavailable(ApiError(response.status_code, f"not an event stream ({kind})", "not_an_event_stream"))


class Seen:
    """Passes each status document once: a reopened stream starts again with the current state, and
    polling repeats the status until it changes."""

    def __init__(self) -> None:
        self.seq = -1
        self.last: dict[str, Any] | None = None

    def new(self, doc: dict[str, Any]) -> bool:
        seq = doc.get("seq")
        if isinstance(seq, int):
            if seq <= self.seq:
                return False
            self.seq = seq
        elif doc == self.last:
            return False
        self.last = doc
        return True


def backoff(base_s: float, attempt: int) -> float:
    return float(base_s * 2 ** attempt)


def outcome(doc: dict[str, Any]) -> dict[str, Any]:
    """The result of a finished job, or the exception its ending calls for."""
    status = doc.get("status")
    if status == "FAILURE":
        raise JobFailed(doc)
    if status == "REVOKED":
        raise JobCancelled(doc)
    return dict(doc.get("result") or {})


def artifact_url(doc: dict[str, Any], name: str) -> str | None:
    for a in (doc.get("result") or {}).get("artifacts", []):
        if a.get("name") == name:
            return str(a["url"])
    return None


def artifact_names(doc: dict[str, Any]) -> Iterable[str]:
    return [str(a["name"]) for a in (doc.get("result") or {}).get("artifacts", [])]
