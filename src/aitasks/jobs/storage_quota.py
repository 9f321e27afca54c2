"""``max_storage_mb`` (issue 18): a tenant's stored bytes, counted where files are written and released where
they are deleted, whoever writes or deletes them (the API, the workers, the sweeps, the retention pass).

``open_artifacts`` wraps every artifact backend in ``MeteredArtifacts``: each job folder and uploaded file has a
small Redis hash (jobs/keys.py ``stored_object``) naming its tenant and the bytes of each of its files, and the
tenant has one counter (``tenant_storage``). ``ADD`` checks the limit and counts a file before its bytes are
written (a name written again counts only its change in size); ``RELEASE`` takes an object's bytes off its
tenant when the object is deleted (``delete_job``, ``delete_file``, and the sweeps' removals of objects whose
records expired). Job documents are their ingestion job's input file, so they count and go with it.

While Redis cannot be reached (the API's outbox takes submits), files are written uncounted and deletes wait in
the process; the next call that reaches Redis again releases them and clears ``keys.STORAGE_COUNTED``. Then, as
after Redis lost its data, a worker counts the kept jobs' files again from the store (worker/storage_recount.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import redis

from aitasks.errors import FieldError, JobError, PayloadTooLarge
from aitasks.jobs import keys
from aitasks.jobs.artifact_store import ArtifactBackend, ArtifactStream
from aitasks.jobs.models import Artifact

log = logging.getLogger(__name__)
MB = 1024 * 1024
AWAY_S = 2.0
UNRELEASED_MAX = 100_000  # deletes kept to release once Redis is back (one process; beyond: left counted)

# KEYS: the object's hash, the tenant's limits hash, the tenant's counter.
# ARGV: the tenant, the file's name, its bytes, the default max_storage_mb.
# Returns {1/0 counted, the tenant's bytes after (or now, when refused), max_storage_mb}.
ADD = """
local old = tonumber(redis.call('HGET', KEYS[1], 'n:' .. ARGV[2])) or 0
local delta = tonumber(ARGV[3]) - old
local m = tonumber(redis.call('HGET', KEYS[2], 'max_storage_mb')) or tonumber(ARGV[4])
local used = tonumber(redis.call('GET', KEYS[3])) or 0
if delta > 0 and m > 0 and used + delta > m * 1048576 then return {0, used, m} end
redis.call('HSET', KEYS[1], 'tenant', ARGV[1], 'n:' .. ARGV[2], ARGV[3])
return {1, redis.call('INCRBY', KEYS[3], delta), m}
"""
# KEYS: the object's hash, its tenant's counter. ARGV: the tenant (the hash must name it). Returns bytes released.
RELEASE = """
if redis.call('HGET', KEYS[1], 'tenant') ~= ARGV[1] then return 0 end
local total = 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 2) == 'n:' then total = total + tonumber(fields[i + 1]) end
end
redis.call('DEL', KEYS[1])
if total > 0 and (tonumber(redis.call('DECRBY', KEYS[2], total)) or 0) < 0 then redis.call('SET', KEYS[2], 0) end
return total
"""


class StorageFull(JobError):
    """A write that would take the tenant over its max_storage_mb: nothing was written. A job's output over
    it fails the job with this message; the API answers an upload's with 413 (``api_error``)."""

    def __init__(self, tenant: str, used: int, adding: int, max_storage_mb: int):
        self.tenant, self.used, self.adding, self.max_storage_mb = tenant, used, adding, max_storage_mb
        super().__init__(f"over this tenant's max_storage_mb of {max_storage_mb} MB: {used / MB:.2f} MB stored, "
                         f"{adding / MB:.2f} MB more refused")

    def api_error(self) -> PayloadTooLarge:
        return PayloadTooLarge(str(self), [FieldError("max_storage_mb", f"at its limit of {self.max_storage_mb} MB")],
                               extra={"limit": "max_storage_mb", "max_storage_mb": self.max_storage_mb,
                                      "storage_used_bytes": self.used, "refused_bytes": self.adding})


class Meter:
    """The Redis side: counts and releases objects' bytes (a sync client, used from threads)."""

    def __init__(self, url: str | None, default_max_mb: int):
        self.url = url
        self.default_max_mb = default_max_mb
        self._client: redis.Redis | None = None
        # After a connection error, no Redis call for a moment: the API calls some deletes on its event loop,
        # which must not wait out a connect timeout per file while Redis is away (the outbox takes submits).
        self._away_until = 0.0
        self._scripts: dict[str, Any] = {}
        # A file stored uncounted (Redis away): once Redis answers again, the counters are marked not whole,
        # so a worker's next sweep counts what was stored meanwhile (worker/storage_recount.py).
        self._uncounted = False
        self._unreleased: list[tuple[str, str]] = []  # (kind, id) deleted while Redis was unreachable

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            assert self.url is not None
            self._client = redis.Redis.from_url(self.url, socket_connect_timeout=1.0, socket_timeout=5.0,
                                                decode_responses=True)
        return self._client

    def owner(self, kind: str, object_id: str) -> str | None:
        """The tenant of a stored object; of a job without one yet, its record's tenant."""
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(keys.stored_object(kind, object_id), "tenant")
        if kind == "job":
            pipe.hget(keys.job(object_id), "tenant")
        return next((t for t in pipe.execute() if t), None)

    def _script(self, source: str) -> Any:
        """The script by its SHA (EVALSHA: Redis need not hash the source each call; loaded again after a
        restart or a flush that dropped it)."""
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        return script

    def _away(self) -> bool:
        return time.monotonic() < self._away_until

    def _back(self) -> None:
        """Redis answers again: what waited while it was unreachable. Files stored uncounted make the counters
        not whole (the workers count them again); deletes give their bytes back now."""
        if self._uncounted:
            self.client.delete(keys.STORAGE_COUNTED)
            self._uncounted = False
            log.info("files were stored uncounted while Redis was unreachable; the workers count them again")
        if self._unreleased:
            waiting, self._unreleased = self._unreleased, []
            try:
                self._release_now(waiting)
            except redis.ConnectionError:
                self._unreleased = waiting + self._unreleased
                raise
            log.info("stored bytes of %d objects deleted while Redis was unreachable released", len(waiting))

    def add(self, kind: str, object_id: str, name: str, size: int, tenant: str | None) -> None:
        """Count ``size`` bytes of ``name`` in the object before they are written; StorageFull if over."""
        if self.url is None:  # no Redis configured: nothing counts
            return
        if self._away():  # written uncounted
            self._uncounted = True
            return
        try:
            self._back()
            tenant = tenant or self.owner(kind, object_id)
            if tenant is None:
                return  # no record, no tenant (a job a sweep will remove): nobody to count it against
            raw: Any = self._script(ADD)(keys=[keys.stored_object(kind, object_id), keys.tenant_limits(tenant),
                                               keys.tenant_storage(tenant)],
                                         args=[tenant, name, size, self.default_max_mb])
        except redis.ConnectionError as exc:  # Redis away (the API's outbox takes submits): written uncounted
            self._away_until = time.monotonic() + AWAY_S
            self._uncounted = True
            log.warning("%s %s/%s stored without counting it (Redis unreachable): %s", kind, object_id, name, exc)
            return
        counted, used, max_mb = (int(v) for v in raw)
        if not counted:
            raise StorageFull(tenant, used, size, max_mb)

    def release(self, kind: str, object_ids: Sequence[str]) -> None:
        """Take deleted objects' bytes off their tenants. While Redis is unreachable they wait in this process
        (at most ``UNRELEASED_MAX``) and are released by its first call that reaches Redis again."""
        if self.url is None:
            return
        items = [(kind, object_id) for object_id in object_ids]
        if self._away():
            self._defer(items)
            return
        try:
            self._back()
            self._release_now(items)
        except redis.RedisError as exc:
            if isinstance(exc, redis.ConnectionError):
                self._away_until = time.monotonic() + AWAY_S
                self._defer(items)  # (some may be released already: releasing again gives back nothing)
            else:
                log.warning("stored bytes of %d %s objects not released: %s", len(items), kind, exc)

    def _defer(self, items: list[tuple[str, str]]) -> None:
        room = UNRELEASED_MAX - len(self._unreleased)
        self._unreleased.extend(items[:max(0, room)])
        if len(items) > room:
            log.warning("stored bytes of %d objects not released: Redis was unreachable and %d releases wait "
                        "already", len(items) - max(0, room), UNRELEASED_MAX)

    def _release_now(self, items: list[tuple[str, str]]) -> None:
        for kind, object_id in items:
            tenant = self._stored_owner(kind, object_id)  # a job never counted has nothing to release
            if tenant is not None:
                self._script(RELEASE)(keys=[keys.stored_object(kind, object_id), keys.tenant_storage(tenant)],
                                      args=[tenant])

    def _stored_owner(self, kind: str, object_id: str) -> str | None:
        return self.client.hget(keys.stored_object(kind, object_id), "tenant")  # type: ignore[return-value]


class MeteredArtifacts:
    """An ``ArtifactBackend`` that counts what it stores against its tenant's max_storage_mb."""

    def __init__(self, inner: ArtifactBackend, meter: Meter):
        self.inner = inner
        self.meter = meter

    def __getattr__(self, name: str) -> Any:  # the backend's own extras (root, path, job_dir, ...)
        return getattr(self.inner, name)

    def save(self, job_id: str, name: str, data: bytes, media_type: str | None = None,
             tenant: str | None = None) -> Artifact:
        self.meter.add("job", job_id, name, len(data), tenant)
        return self.inner.save(job_id, name, data, media_type)

    def read(self, job_id: str, name: str) -> bytes:
        return self.inner.read(job_id, name)

    def download(self, job_id: str, name: str) -> Path | ArtifactStream | None:
        return self.inner.download(job_id, name)

    def local_copy(self, job_id: str, name: str, scratch: Path) -> Path:
        return self.inner.local_copy(job_id, name, scratch)

    def delete_job(self, job_id: str) -> None:
        self.inner.delete_job(job_id)
        self.meter.release("job", [job_id])

    def touch_jobs(self, job_ids: Sequence[str]) -> None:
        self.inner.touch_jobs(job_ids)

    def job_files(self) -> Iterator[tuple[str, str, int]]:
        return self.inner.job_files()

    def save_file(self, tenant: str, file_id: str, data: bytes) -> None:
        self.meter.add("file", file_id, "data", len(data), tenant)
        self.inner.save_file(tenant, file_id, data)

    def read_file(self, tenant: str, file_id: str) -> bytes:
        return self.inner.read_file(tenant, file_id)

    def delete_file(self, tenant: str, file_id: str) -> None:
        self.inner.delete_file(tenant, file_id)
        self.meter.release("file", [file_id])

    def sweep(self, job_exists: Callable[[list[str]], list[bool]], min_age_s: float = 120.0) -> int:
        gone = _Gone(job_exists)
        removed = self.inner.sweep(gone, min_age_s)
        self.meter.release("job", gone.ids)
        return removed

    def sweep_files(self, file_exists: Callable[[list[str]], list[bool]], min_age_s: float = 120.0) -> int:
        gone = _Gone(file_exists)
        removed = self.inner.sweep_files(gone, min_age_s)
        self.meter.release("file", gone.ids)
        return removed


class _Gone:
    """A sweep's ``exists`` that remembers which ids it answered "no record" for: the ones the sweep removes."""

    def __init__(self, exists: Callable[[list[str]], list[bool]]):
        self.exists = exists
        self.ids: list[str] = []

    def __call__(self, ids: list[str]) -> list[bool]:
        found = self.exists(ids)
        self.ids.extend(i for i, f in zip(ids, found) if not f)
        return found
