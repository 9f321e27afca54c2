"""The storage counters (``max_storage_mb``, jobs/storage_quota.py) rebuilt after Redis lost them.

Each stored job folder has a Redis hash naming its tenant and its files' bytes, and each tenant a counter;
after Redis lost its data (a FLUSHALL, a failover to a replica that missed writes) both start again from
zero, while the files of recorded jobs stay for their retention (worker/artifact_sweep.py). So once
``keys.STORAGE_COUNTED`` is missing (lost with the data, or never set: a first start), one worker (a lock)
lists every job's files in the artifact store and counts, for each job whose files are kept, the files its
hash does not name yet: one script a job, which also checks the job is still kept, so a job deleted while
the recount ran is not counted back. Files written meanwhile were counted by their write (``ADD``) and are
named already; a recount run twice adds nothing. Uploads (``/v1/files``) are not counted again: their
records were Redis's only, so the sweep removes them.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterable, Iterator

import redis

from aitasks.jobs import keys
from aitasks.jobs.artifacts import ArtifactBackend
from aitasks.worker.artifact_sweep import kept_and_recorded, recorded_files

log = logging.getLogger(__name__)
BATCH = 200  # jobs a step: a few Redis round trips and SQL queries each
LOCK_S = 600  # the lock's life, renewed every batch: a recounting worker that died frees it this much later

# KEYS: the job folder's hash, its tenant's counter, the job's record, the files-kept index.
# ARGV: the tenant, the job id, then (name, bytes) pairs of its files.
# Returns the bytes counted: the files the hash did not name, while the job's files are kept (its record or
# its files-kept entry exists) and the hash names no other tenant.
RECOUNT = """
if redis.call('EXISTS', KEYS[3]) == 0 and not redis.call('ZSCORE', KEYS[4], ARGV[2]) then return 0 end
local owner = redis.call('HGET', KEYS[1], 'tenant')
if owner and owner ~= ARGV[1] then return 0 end
local added = 0
for i = 3, #ARGV, 2 do
  if redis.call('HSETNX', KEYS[1], 'n:' .. ARGV[i], ARGV[i + 1]) == 1 then added = added + tonumber(ARGV[i + 1]) end
end
if added > 0 then
  redis.call('HSET', KEYS[1], 'tenant', ARGV[1])
  redis.call('INCRBY', KEYS[2], added)
end
return added
"""


def _by_job(files: Iterable[tuple[str, str, int]]) -> Iterator[tuple[str, list[tuple[str, int]]]]:
    for job_id, group in itertools.groupby(files, key=lambda f: f[0]):
        yield job_id, [(name, size) for _, name, size in group]


def _tenants(r: redis.Redis, job_ids: list[str], recorded: dict[str, tuple[float, str]],
             database_url: str | None) -> dict[str, str]:
    """Each job's tenant: from its Redis record, else from SQL (``recorded``: the sweep's answer already
    read; a job kept through its files-kept entry alone has no record in Redis and is asked here)."""
    pipe = r.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(keys.job(job_id), "tenant")
    owners = {job_id: tenant for job_id, (_, tenant) in recorded.items()}
    owners.update({job_id: (t.decode() if isinstance(t, bytes) else t)
                   for job_id, t in zip(job_ids, pipe.execute()) if t})
    missing = [job_id for job_id in job_ids if job_id not in owners]
    if missing and database_url is not None:
        owners.update({job_id: tenant for job_id, (_, tenant) in recorded_files(database_url, missing).items()})
    return owners


def recount(r: redis.Redis, artifacts: ArtifactBackend, database_url: str | None) -> tuple[int, int]:
    """Count every kept job's files that its hash does not name. Returns (jobs counted, bytes counted)."""
    script = r.register_script(RECOUNT)
    counted_jobs = counted_bytes = 0
    jobs = _by_job(artifacts.job_files())
    while batch := list(itertools.islice(jobs, BATCH)):
        r.expire(keys.STORAGE_RECOUNT_LOCK, LOCK_S)
        ids = [job_id for job_id, _ in batch]
        kept, recorded = kept_and_recorded(r, ids, database_url)
        owners = _tenants(r, ids, recorded, database_url)
        pipe = r.pipeline(transaction=False)  # the batch's scripts in one round trip
        for (job_id, files), keep in zip(batch, kept):
            tenant = owners.get(job_id)
            if keep and tenant is not None:
                pairs = [str(v) for name, size in files for v in (name, size)]
                script(keys=[keys.stored_object("job", job_id), keys.tenant_storage(tenant), keys.job(job_id),
                             keys.JOBS_FILES_KEPT], args=[tenant, job_id, *pairs], client=pipe)
        for added in pipe.execute():
            if int(added):
                counted_jobs += 1
                counted_bytes += int(added)
    return counted_jobs, counted_bytes


def start_if_lost(r: redis.Redis, artifacts: ArtifactBackend, database_url: str | None, worker: str
                  ) -> threading.Thread | None:
    """When the counters are not known to be whole, recount them in a thread of this worker (unless another
    worker holds the lock): the monitor that calls this must keep its heartbeat while a large store is listed."""
    if r.exists(keys.STORAGE_COUNTED) or not r.set(keys.STORAGE_RECOUNT_LOCK, worker, nx=True, ex=LOCK_S):
        return None

    def run() -> None:
        started = time.monotonic()
        try:
            jobs, added = recount(r, artifacts, database_url)
            r.set(keys.STORAGE_COUNTED, str(time.time()))
            log.info("storage recount: %d jobs' files counted again (%d bytes) in %.1f s", jobs, added,
                     time.monotonic() - started)
        except Exception as exc:  # Redis, SQL or the store away: the next sweep (a minute) tries again
            log.warning("storage recount: %s; trying again at the next sweep", exc)
        finally:
            try:
                r.delete(keys.STORAGE_RECOUNT_LOCK)
            except redis.RedisError:
                pass  # it expires

    thread = threading.Thread(target=run, name="aitasks-storage-recount", daemon=True)
    thread.start()
    return thread
