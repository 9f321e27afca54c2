"""Files that go into and come out of jobs, stored outside Redis (one folder, or key prefix, per job).

The default is a folder (``ArtifactStore``, ``AITASKS_ARTIFACTS_DIR``); several machines share it by
mounting the same folder (NFS or similar), or use an S3-compatible bucket instead
(``AITASKS_ARTIFACTS_URL=s3://bucket/prefix``, ``jobs/s3_artifacts.py``). ``open_artifacts`` picks one;
both follow ``jobs/artifact_store.py``'s ``ArtifactBackend``.

In the folder, writes go to a temporary name and are renamed into place, so a reader never sees half a
file and a job that runs again after a crash simply overwrites its own outputs.

Files uploaded through ``POST /v1/files`` live beside the jobs' folders, in ``files/<tenant digest>/<id>``;
their Redis record holds only metadata. Both are swept the same way: once the record is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aitasks.jobs.artifact_store import (
    FILES_AREA,
    ArtifactBackend,
    ArtifactStream,
    artifact_url,
    check_name,
    media_type_for,
    remove_unknown,
    tenant_area,
)
from aitasks.jobs.models import Artifact

if TYPE_CHECKING:
    from aitasks.settings import Settings

__all__ = ["ArtifactBackend", "ArtifactStore", "ArtifactStream", "artifact_url", "check_name", "media_type_for",
           "open_artifacts"]


def open_artifacts(settings: Settings) -> ArtifactBackend:
    """The store the settings name: an S3-compatible bucket with AITASKS_ARTIFACTS_URL, else the folder;
    metered for max_storage_mb."""
    from aitasks.errors import ConfigurationError
    from aitasks.jobs.storage_quota import Meter, MeteredArtifacts  # it imports this module's neighbours

    inner: ArtifactBackend
    if settings.artifacts_url:
        from aitasks.jobs.s3_artifacts import S3ArtifactStore  # boto3 only where a bucket is configured

        inner = S3ArtifactStore.from_settings(settings)
    else:
        inner = ArtifactStore(settings.artifacts_path)
    # Every write and delete counted against its tenant's max_storage_mb (jobs/storage_quota.py); with no
    # Redis configured (a tool or test that only handles files) there is nothing to count against.
    try:
        url: str | None = settings.resolved_redis_url()
    except ConfigurationError:
        url = None
    return MeteredArtifacts(inner, Meter(url, settings.default_max_storage_mb))


class ArtifactStore:
    """The folder store (the default): ``<root>/<job id>/<name>`` and ``<root>/files/<area>/<file id>``."""

    def __init__(self, root: Path):
        self.root = root

    check_name = staticmethod(check_name)

    def job_dir(self, job_id: str) -> Path:
        return self.root / check_name(job_id)

    def path(self, job_id: str, name: str) -> Path:
        return self.job_dir(job_id) / check_name(name)

    def save(self, job_id: str, name: str, data: bytes, media_type: str | None = None,
             tenant: str | None = None) -> Artifact:
        target = self.path(job_id, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
        return Artifact(name=name, media_type=media_type or media_type_for(name), bytes=len(data))

    def read(self, job_id: str, name: str) -> bytes:
        return self.path(job_id, name).read_bytes()

    def download(self, job_id: str, name: str) -> Path | ArtifactStream | None:
        path = self.path(job_id, name)
        return path if path.is_file() else None

    def local_copy(self, job_id: str, name: str, scratch: Path) -> Path:
        path = self.path(job_id, name)  # already a real file: no copy
        if not path.is_file():
            raise FileNotFoundError(str(path))
        return path

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)

    def touch_jobs(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            try:
                os.utime(self.job_dir(job_id))
            except (OSError, ValueError):
                pass

    def job_files(self) -> Iterator[tuple[str, str, int]]:
        if not self.root.is_dir():
            return
        for folder in self.root.iterdir():
            if folder.name == FILES_AREA or not folder.is_dir():
                continue
            for path in folder.iterdir():  # (a write in progress is a dot file: not counted yet)
                if not path.name.startswith(".") and path.is_file():
                    with contextlib.suppress(FileNotFoundError):  # removed meanwhile
                        yield folder.name, path.name, path.stat().st_size

    # --- uploaded files (POST /v1/files) ----------------------------------------------------------

    def file_path(self, tenant: str, file_id: str) -> Path:
        return self.root / FILES_AREA / tenant_area(tenant) / check_name(file_id)

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
        return remove_unknown(candidates, _name, job_exists, _remove_folders)

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
        return remove_unknown(candidates, _name, file_exists, _remove_files)


def _name(path: Path) -> str:
    return path.name


def _remove_folders(paths: list[Path]) -> None:
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _remove_files(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
