"""What the sync and asyncio clients share: settings, request building, stream parsing, outcomes."""

from __future__ import annotations

import json
import mimetypes
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from aitasks.client.errors import DocumentFailed, JobCancelled, JobFailed

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


class SseParser:
    """Server-Sent Events lines in, the job's status documents out (None at the stream's end)."""

    def __init__(self) -> None:
        self.event: str | None = None
        self.data: list[str] = []

    def feed(self, line: str) -> tuple[bool, dict[str, Any] | None]:
        """(ended, document): a document when a message completes, ended when the `end` event arrives."""
        if line == "":
            event, data = self.event, "\n".join(self.data)
            self.event, self.data = None, []
            if not data:
                return False, None
            if event == "end":
                return True, None
            return False, json.loads(data)
        if line.startswith(":"):
            return False, None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self.event = value
        elif name == "data":
            self.data.append(value)
        return False, None


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
