"""Artifacts in an S3-compatible bucket (``AITASKS_ARTIFACTS_URL=s3://bucket/prefix``): what lets a worker on
another host read a job's inputs and the API serve its outputs without a shared folder.

The keys mirror the folder store's paths under the prefix: ``<prefix>/<job id>/<name>`` and
``<prefix>/files/<tenant digest>/<file id>``. A PUT is atomic (a reader sees the old object or the new
one, never half), and a job run again overwrites its own keys. The sweeps list by prefix and judge a
job's age by its newest object (``touch_jobs`` writes a ``.touch`` marker, a name no download accepts).

boto3 (the AWS SDK): the S3 client every S3-compatible server is tested against, thread-safe, with
retries; built once per process (after a fork) by whoever opens the store.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from aitasks.errors import ServiceUnavailable, TransientJobError

from aitasks.jobs.artifact_store import (
    FILES_AREA,
    ArtifactStream,
    check_name,
    media_type_for,
    remove_unknown,
    tenant_area,
)
from aitasks.jobs.models import Artifact
from aitasks.settings import Settings

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 * 1024  # what a download streams at a time
TOUCH = ".touch"  # the marker touch_jobs writes (not a valid artifact name: never served)
_MISSING = {"NoSuchKey", "404", "NotFound"}


class ArtifactStoreUnavailable(ServiceUnavailable, TransientJobError):
    """The bucket did not answer, after boto3's own retries: for a request a 503, for a job a failure worth
    retrying (the job's retries and backoff), as when Redis is away."""


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING


@contextmanager
def _reaching(bucket: str) -> Iterator[None]:
    """Calls to the server: a connection failure, a timeout or a 5xx is the store being unavailable."""
    try:
        yield
    except BotoCoreError as exc:
        raise _unavailable(bucket, exc) from exc
    except ClientError as exc:
        if int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) >= 500:
            raise _unavailable(bucket, exc) from exc
        raise


def _unavailable(bucket: str, exc: Exception) -> ArtifactStoreUnavailable:
    # The details (the server's address) go to the log, not to a client's 503.
    log.warning("artifact store s3://%s unreachable: %s", bucket, exc)
    return ArtifactStoreUnavailable("The artifact store is unreachable; try again shortly.")


def s3_client(settings: Settings) -> Any:
    """A client for the configured server: path-style addressing when an endpoint is named (what
    S3-compatible servers expect), checksums only where S3 requires them (older servers refuse the rest)."""
    key_id = settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None
    secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
    config = Config(
        s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
        retries={"max_attempts": 4, "mode": "standard"}, connect_timeout=5, read_timeout=60,
        max_pool_connections=32, request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    region = settings.s3_region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.session.Session().client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name=region, aws_access_key_id=key_id,
        aws_secret_access_key=secret, config=config)


class S3ArtifactStore:
    """The ``ArtifactBackend`` on a bucket (see jobs/artifact_store.py)."""

    def __init__(self, client: Any, bucket: str, prefix: str = ""):
        self.client = client
        self.bucket = bucket
        self.base = f"{prefix.strip('/')}/" if prefix.strip("/") else ""

    @classmethod
    def from_settings(cls, settings: Settings) -> S3ArtifactStore:
        bucket, _, prefix = (settings.artifacts_url or "").removeprefix("s3://").partition("/")
        return cls(s3_client(settings), bucket, prefix)

    def __repr__(self) -> str:
        return f"S3ArtifactStore(s3://{self.bucket}/{self.base})"

    def key(self, job_id: str, name: str) -> str:
        return f"{self.base}{check_name(job_id)}/{check_name(name)}"

    def file_key(self, tenant: str, file_id: str) -> str:
        return f"{self.base}{FILES_AREA}/{tenant_area(tenant)}/{check_name(file_id)}"

    # --- objects ---------------------------------------------------------------------------------

    def _put(self, key: str, data: bytes, media_type: str) -> None:
        with _reaching(self.bucket):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=media_type)

    def _get(self, key: str) -> dict[str, Any]:
        try:
            with _reaching(self.bucket):
                return self.client.get_object(Bucket=self.bucket, Key=key)  # type: ignore[no-any-return]
        except ClientError as exc:
            if _missing(exc):
                raise FileNotFoundError(f"s3://{self.bucket}/{key}") from None
            raise

    def _read(self, key: str) -> bytes:
        body = self._get(key)["Body"]
        try:
            with _reaching(self.bucket):
                return body.read()  # type: ignore[no-any-return]
        finally:
            body.close()

    def _list(self, prefix: str) -> Iterator[dict[str, Any]]:
        with _reaching(self.bucket):
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                yield from page.get("Contents", [])

    def _delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
            objects = [{"Key": k} for k in keys[start:start + 1000]]
            with _reaching(self.bucket):
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})

    # --- job files -------------------------------------------------------------------------------

    def save(self, job_id: str, name: str, data: bytes, media_type: str | None = None,
             tenant: str | None = None) -> Artifact:
        media_type = media_type or media_type_for(name)
        self._put(self.key(job_id, name), data, media_type)
        return Artifact(name=name, media_type=media_type, bytes=len(data))

    def read(self, job_id: str, name: str) -> bytes:
        return self._read(self.key(job_id, name))

    def download(self, job_id: str, name: str) -> Path | ArtifactStream | None:
        try:
            answer = self._get(self.key(job_id, name))
        except FileNotFoundError:
            return None
        body = answer["Body"]
        return ArtifactStream(size=int(answer["ContentLength"]), chunks=body.iter_chunks(CHUNK_BYTES),
                              close=body.close)

    def local_copy(self, job_id: str, name: str, scratch: Path) -> Path:
        body = self._get(self.key(job_id, name))["Body"]
        scratch.mkdir(parents=True, exist_ok=True)
        target = scratch / check_name(name)
        tmp = scratch / f".{name}.{os.getpid()}.tmp"
        try:
            with _reaching(self.bucket), tmp.open("wb") as out:
                for chunk in body.iter_chunks(CHUNK_BYTES):
                    out.write(chunk)
        finally:
            body.close()
        os.replace(tmp, target)
        return target

    def delete_job(self, job_id: str) -> None:
        self._delete([o["Key"] for o in self._list(f"{self.base}{check_name(job_id)}/")])

    def touch_jobs(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            self._put(f"{self.base}{check_name(job_id)}/{TOUCH}", b"", "text/plain")

    # --- uploaded files (POST /v1/files) ----------------------------------------------------------

    def save_file(self, tenant: str, file_id: str, data: bytes) -> None:
        self._put(self.file_key(tenant, file_id), data, "application/octet-stream")

    def read_file(self, tenant: str, file_id: str) -> bytes:
        return self._read(self.file_key(tenant, file_id))

    def delete_file(self, tenant: str, file_id: str) -> None:
        with _reaching(self.bucket):
            self.client.delete_object(Bucket=self.bucket, Key=self.file_key(tenant, file_id))

    def job_files(self) -> Iterator[tuple[str, str, int]]:
        for obj in self._list(self.base):  # (listed in key order: a job's files together)
            job_id, sep, name = obj["Key"][len(self.base):].partition("/")
            if sep and job_id != FILES_AREA and name and not name.startswith(".") and "/" not in name:
                yield job_id, name, int(obj["Size"])

    # --- sweeps ----------------------------------------------------------------------------------

    def sweep(self, job_exists: Callable[[list[str]], list[bool]], min_age_s: float = 120.0) -> int:
        """Delete every key of the jobs whose records expired (their newest object older than min_age_s)."""
        newest: dict[str, float] = {}
        keys: dict[str, list[str]] = {}
        for obj in self._list(self.base):
            job_id, sep, _ = obj["Key"][len(self.base):].partition("/")
            if not sep or job_id == FILES_AREA:
                continue
            newest[job_id] = max(newest.get(job_id, 0.0), _epoch(obj["LastModified"]))
            keys.setdefault(job_id, []).append(obj["Key"])
        now = time.time()
        old = [job_id for job_id, at in newest.items() if now - at > min_age_s]
        return remove_unknown(old, str, job_exists,
                              lambda gone: self._delete([k for job_id in gone for k in keys[job_id]]))

    def sweep_files(self, file_exists: Callable[[list[str]], list[bool]], min_age_s: float = 120.0) -> int:
        now = time.time()
        old = [o["Key"] for o in self._list(f"{self.base}{FILES_AREA}/")
               if now - _epoch(o["LastModified"]) > min_age_s]
        return remove_unknown(old, _last_part, file_exists, self._delete)


def _epoch(value: datetime) -> float:
    return value.timestamp()


def _last_part(key: str) -> str:
    return key.rpartition("/")[2]
