"""What every artifact store offers (the ``ArtifactBackend`` protocol) and the rules they share: safe
names, where the API serves a file, the uploads' area, the sweep's batching.

Two implementations: a folder (``jobs/artifacts.py``, the default) and an S3-compatible bucket
(``jobs/s3_artifacts.py``, ``AITASKS_ARTIFACTS_URL=s3://...``); ``jobs/artifacts.py`` picks one.
"""

from __future__ import annotations

import hashlib
import mimetypes
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from aitasks.jobs.models import Artifact

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
FILES_AREA = "files"  # not a job id (those are UUIDs): the job sweep leaves it to sweep_files
SWEEP_BATCH = 200  # ids per existence check (one Redis pipeline)

T = TypeVar("T")


def artifact_url(base: str, job_id: str, name: str) -> str:
    """Where the API serves a job's artifact (``base``: the API's public URL)."""
    return f"{base}/api/v1/tasks/{job_id}/artifacts/{name}"


def media_type_for(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def check_name(name: str) -> str:
    """A job id, file id or artifact name that is safe as one path segment (or one part of an S3 key)."""
    if not _SAFE_NAME.match(name) or ".." in name:
        raise ValueError(f"invalid artifact name {name!r}: letters, digits, '.', '_' and '-' only")
    return name


def tenant_area(tenant: str) -> str:
    """The folder of a tenant's uploads: a digest, not the tenant's name (names may be '.' or '..')."""
    return hashlib.sha256(tenant.encode()).hexdigest()[:32]


@dataclass
class ArtifactStream:
    """An artifact read as it is sent (never whole in memory): its size and its chunks; ``close`` frees the
    connection when the reader stops early."""

    size: int
    chunks: Iterator[bytes]
    close: Callable[[], None]


class ArtifactBackend(Protocol):
    """Where job inputs, job outputs and ``POST /v1/files`` uploads live. Every write is atomic (a reader
    never sees half a file) and a name written again is replaced, so a job run again overwrites its own
    outputs. A missing file reads as ``FileNotFoundError``."""

    def save(self, job_id: str, name: str, data: bytes, media_type: str | None = None,
             tenant: str | None = None) -> Artifact:
        """``tenant``: whose storage it counts against (jobs/storage_quota.py), when the job has no record yet."""
        ...

    def read(self, job_id: str, name: str) -> bytes: ...

    def download(self, job_id: str, name: str) -> Path | ArtifactStream | None:
        """For the API: a local file to serve, a stream to send, or None when it does not exist."""
        ...

    def local_copy(self, job_id: str, name: str, scratch: Path) -> Path:
        """A real file with the artifact's bytes, for a library that wants a path: the stored file itself,
        or a copy downloaded into ``scratch`` (a per-job folder its caller removes)."""
        ...

    def delete_job(self, job_id: str) -> None: ...

    def touch_jobs(self, job_ids: Sequence[str]) -> None:
        """Make these jobs' files young again, so the sweep leaves them while no record exists yet."""
        ...

    def job_files(self) -> Iterator[tuple[str, str, int]]:
        """Every stored file of every job, as (job id, name, bytes), a job's files together (for the storage
        recount after Redis lost its counters, jobs/storage_recount.py); not the uploads' area."""
        ...

    def save_file(self, tenant: str, file_id: str, data: bytes) -> None: ...

    def read_file(self, tenant: str, file_id: str) -> bytes: ...

    def delete_file(self, tenant: str, file_id: str) -> None: ...

    def sweep(self, job_exists: Callable[[list[str]], list[bool]], min_age_s: float = 120.0) -> int:
        """Delete the files of jobs whose records expired. Returns how many jobs were removed."""
        ...

    def sweep_files(self, file_exists: Callable[[list[str]], list[bool]], min_age_s: float = 120.0) -> int:
        """Delete uploaded files whose records expired. Returns how many were removed."""
        ...


def remove_unknown(items: Sequence[T], name: Callable[[T], str], exists: Callable[[list[str]], list[bool]],
                   remove: Callable[[list[T]], None]) -> int:
    """Remove the items whose name (a job or file id) ``exists`` says has no record, a batch a call."""
    removed = 0
    for start in range(0, len(items), SWEEP_BATCH):
        chunk = items[start:start + SWEEP_BATCH]
        gone = [item for item, found in zip(chunk, exists([name(i) for i in chunk])) if not found]
        if gone:
            remove(gone)
            removed += len(gone)
    return removed
