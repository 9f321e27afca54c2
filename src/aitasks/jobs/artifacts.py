"""Files that go into and come out of jobs, stored outside Redis (one folder per job).

Several machines share it by mounting the same folder (NFS or similar) at ``AITASKS_ARTIFACTS_DIR``.
Writes go to a temporary name and are renamed into place, so a reader never sees half a file and a
job that runs again after a crash simply overwrites its own outputs.
"""

from __future__ import annotations

import mimetypes
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from aitasks.jobs.models import Artifact


def artifact_url(base: str, job_id: str, name: str) -> str:
    """Where the API serves a job's artifact (``base``: the API's public URL)."""
    return f"{base}/api/v1/tasks/{job_id}/artifacts/{name}"

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def media_type_for(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


class ArtifactStore:
    def __init__(self, root: Path):
        self.root = root

    @staticmethod
    def check_name(name: str) -> str:
        if not _SAFE_NAME.match(name) or ".." in name:
            raise ValueError(f"invalid artifact name {name!r}: letters, digits, '.', '_' and '-' only")
        return name

    def job_dir(self, job_id: str) -> Path:
        return self.root / self.check_name(job_id)

    def path(self, job_id: str, name: str) -> Path:
        return self.job_dir(job_id) / self.check_name(name)

    def save(self, job_id: str, name: str, data: bytes, media_type: str | None = None) -> Artifact:
        target = self.path(job_id, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return Artifact(name=name, media_type=media_type or media_type_for(name), bytes=len(data))

    def read(self, job_id: str, name: str) -> bytes:
        return self.path(job_id, name).read_bytes()

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def sweep(self, job_exists: Callable[[list[str]], list[bool]], min_age_s: float = 120.0) -> int:
        """Delete the folders of jobs whose records expired. Returns how many were removed."""
        if not self.root.is_dir():
            return 0
        now = time.time()
        candidates = [p for p in self.root.iterdir() if p.is_dir() and now - p.stat().st_mtime > min_age_s]
        removed = 0
        for start in range(0, len(candidates), 200):
            chunk = candidates[start:start + 200]
            for path, exists in zip(chunk, job_exists([p.name for p in chunk])):
                if not exists:
                    shutil.rmtree(path, ignore_errors=True)
                    removed += 1
        return removed
