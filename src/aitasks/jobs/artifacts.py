"""Files that go into and come out of jobs, stored outside Redis (one folder per job).

Several machines share it by mounting the same folder (NFS or similar) at ``AITASKS_ARTIFACTS_DIR``.
Writes go to a temporary name and are renamed into place, so a reader never sees half a file and a
job that runs again after a crash simply overwrites its own outputs.

Files uploaded through ``POST /v1/files`` live beside the jobs' folders, in ``files/<tenant digest>/<id>``;
their Redis record holds only metadata. Both are swept the same way: once the record is gone.
"""

from __future__ import annotations

import hashlib
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
FILES_AREA = "files"  # not a job id (those are UUIDs): the job sweep leaves it to sweep_files


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

    # --- uploaded files (POST /v1/files) ----------------------------------------------------------

    def file_path(self, tenant: str, file_id: str) -> Path:
        # A digest, not the tenant's name: tenant names may be '.' or '..'.
        area = hashlib.sha256(tenant.encode()).hexdigest()[:32]
        return self.root / FILES_AREA / area / self.check_name(file_id)

    def save_file(self, tenant: str, file_id: str, data: bytes) -> None:
        target = self.file_path(tenant, file_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{file_id}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def read_file(self, tenant: str, file_id: str) -> bytes:
        return self.file_path(tenant, file_id).read_bytes()

    def delete_file(self, tenant: str, file_id: str) -> None:
        self.file_path(tenant, file_id).unlink(missing_ok=True)

    def sweep(self, job_exists: Callable[[list[str]], list[bool]], min_age_s: float = 120.0) -> int:
        """Delete the folders of jobs whose records expired. Returns how many were removed."""
        if not self.root.is_dir():
            return 0
        now = time.time()
        candidates = [p for p in self.root.iterdir()
                      if p.is_dir() and p.name != FILES_AREA and now - p.stat().st_mtime > min_age_s]
        return _remove_unknown(candidates, job_exists, lambda p: shutil.rmtree(p, ignore_errors=True))

    def sweep_files(self, file_exists: Callable[[list[str]], list[bool]], min_age_s: float = 120.0) -> int:
        """Delete uploaded files whose records expired (and temporary files left by a crash)."""
        area = self.root / FILES_AREA
        if not area.is_dir():
            return 0
        now = time.time()
        old = [p for p in area.glob("*/*") if p.is_file() and now - p.stat().st_mtime > min_age_s]
        for tmp in (p for p in old if p.name.startswith(".")):
            tmp.unlink(missing_ok=True)
        candidates = [p for p in old if not p.name.startswith(".")]
        return _remove_unknown(candidates, file_exists, lambda p: p.unlink(missing_ok=True))


def _remove_unknown(paths: list[Path], exists: Callable[[list[str]], list[bool]],
                    remove: Callable[[Path], None]) -> int:
    """Remove the paths whose name (a job or file id) ``exists`` says has no record; 200 ids a call."""
    removed = 0
    for start in range(0, len(paths), 200):
        chunk = paths[start:start + 200]
        for path, found in zip(chunk, exists([p.name for p in chunk])):
            if not found:
                remove(path)
                removed += 1
    return removed
