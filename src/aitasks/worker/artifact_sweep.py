"""The artifact sweep (run by each worker's monitor, worker/monitor.py): the folders of jobs whose files
are no longer kept, and uploads (/v1/files) whose records expired, are removed.

A job's files are kept while Redis holds its record, then until its end plus its retention
(``keys.JOBS_FILES_KEPT``, filled by the recorder as it lets a recorded job go). Both live in Redis; the
store of record is what says a job ended, so a job Redis does not know is looked up in SQL before its
files go: after Redis lost its data the files of recorded jobs stay for their retention, as their rows
say they exist (the index is filled again from what SQL answered). When SQL cannot be read, nothing is
removed that round.
"""

from __future__ import annotations

import logging
import time

import redis

from aitasks.jobs import keys
from aitasks.jobs.artifacts import ArtifactBackend
from aitasks.store import engine as engines
from aitasks.store import records

log = logging.getLogger(__name__)


def recorded_files(database_url: str, job_ids: list[str]) -> dict[str, tuple[float, str]]:
    """SQL's answer for these jobs (store/records.py ``recorded_files``); raises when SQL cannot be read."""
    engine = engines.create(database_url)  # per call: no connection outlives it (the worker forks its pool)
    try:
        with engine.connect() as connection:
            return records.recorded_files(connection, job_ids)
    finally:
        engine.dispose()


def files_kept(r: redis.Redis, job_ids: list[str], database_url: str | None = None) -> list[bool]:
    """Whether each job's files are still kept: its record is in Redis, or it was let go once recorded and
    its retention has not ended (keys.JOBS_FILES_KEPT, whose ended entries go here), or, with a store of
    record (``database_url``), SQL has it and its retention has not ended. Raises when SQL cannot be read."""
    return kept_and_recorded(r, job_ids, database_url)[0]


def kept_and_recorded(r: redis.Redis, job_ids: list[str], database_url: str | None
                      ) -> tuple[list[bool], dict[str, tuple[float, str]]]:
    """``files_kept``, and SQL's answer for the jobs Redis did not know (``recorded_files``; empty without
    a store of record or when Redis knew them all)."""
    pipe = r.pipeline(transaction=False)
    pipe.zremrangebyscore(keys.JOBS_FILES_KEPT, "-inf", time.time())
    for job_id in job_ids:
        pipe.exists(keys.job(job_id))
        pipe.zscore(keys.JOBS_FILES_KEPT, job_id)
    found = pipe.execute()[1:]
    kept = [bool(found[2 * i]) or found[2 * i + 1] is not None for i in range(len(job_ids))]
    unknown = [job_id for job_id, k in zip(job_ids, kept) if not k]
    if not unknown or database_url is None:
        return kept, {}
    answer = recorded_files(database_url, unknown)
    now = time.time()
    recorded = {job_id: until for job_id, (until, _) in answer.items() if until > now}
    if recorded:  # Redis had lost them: back in the index, so the next sweeps need no SQL for them
        log.info("artifact sweep: %d recorded jobs' files kept for their retention (Redis did not know them)",
                 len(recorded))
        r.zadd(keys.JOBS_FILES_KEPT, recorded)
    return [k or job_id in recorded for job_id, k in zip(job_ids, kept)], answer


def sweep(r: redis.Redis, artifacts: ArtifactBackend, database_url: str | None, min_age_s: float = 120.0
          ) -> tuple[int, int]:
    """One sweep: (job folders removed, uploads removed)."""
    jobs = artifacts.sweep(lambda ids: files_kept(r, ids, database_url), min_age_s)
    if jobs:
        log.info("removed the files of %d expired jobs", jobs)

    def file_exists(file_ids: list[str]) -> list[bool]:
        pipe = r.pipeline(transaction=False)
        for file_id in file_ids:
            pipe.exists(keys.replicate_file(file_id))
        return [bool(x) for x in pipe.execute()]

    uploads = artifacts.sweep_files(file_exists, min_age_s)
    if uploads:
        log.info("removed %d expired uploads (/v1/files)", uploads)
    return jobs, uploads
