"""The API's reads of the store of record: a job Redis no longer holds, and the tasks list merged from
Redis (live and recent jobs) and SQL (ended jobs), one keyset page at a time. SQL calls run in a thread
(the sync engine: no async driver to add); the API's event loop never waits on them."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, TypeVar

import redis.asyncio as aredis
import sqlalchemy as sa

from aitasks.errors import ServiceUnavailable
from aitasks.jobs import keys
from aitasks.jobs.models import Job
from aitasks.jobs.pager import decode_cursor, encode_cursor, read_page
from aitasks.store import engine as engines
from aitasks.store.records import Filters, get_deliveries, get_job, list_jobs

log = logging.getLogger("aitasks.store")

Position = tuple[int, str]  # (created ms, id): the order of every listing, newest first


T = TypeVar("T")


async def _read(database_url: str, read: Callable[[sa.Connection], T]) -> T:
    """One read of the store of record in a thread (the API's event loop never waits on SQL)."""
    def run() -> T:
        with engines.shared(database_url).connect() as connection:
            return read(connection)

    return await asyncio.to_thread(run)


async def recorded_job(database_url: str, tenant: str, job_id: str) -> Job | None:
    """The tenant's ended job from SQL; None when unknown or foreign. 503 when SQL cannot be read."""
    if len(job_id) > 100:
        return None
    try:
        return await _read(database_url, lambda c: get_job(c, tenant, job_id))
    except sa.exc.SQLAlchemyError as exc:
        log.warning("job history cannot be read: %s", str(exc).splitlines()[0])
        raise ServiceUnavailable("Job history is unavailable right now; try again shortly") from None


async def recorded_deliveries(database_url: str, tenant: str, job_id: str) -> list[dict[str, Any]]:
    """The job's webhook delivery log from SQL (once Redis forgot it); empty when SQL cannot be read."""
    try:
        return await _read(database_url, lambda c: get_deliveries(c, tenant, job_id))
    except sa.exc.SQLAlchemyError as exc:
        log.warning("webhook delivery log cannot be read: %s", str(exc).splitlines()[0])
        return []


@dataclass
class Page:
    jobs: list[Job]
    next_cursor: str | None


async def list_page(r: aredis.Redis, database_url: str, tenant: str, limit: int, cursor: str | None,
                    filters: Filters) -> Page:
    """One page of the tenant's jobs, from both stores, newest first, each job once.

    Each store gives its next ``limit`` matches after the cursor; when one of them stopped short of its
    end (more rows, or the Redis scan's budget), only what sorts before the point it stopped at is sure
    to be complete, so the page ends there. Raises ValueError for a cursor this API did not give.
    """
    after = decode_cursor(cursor) if cursor else None  # checked before either store is asked

    async def load(ids: list[str]) -> list[Job | None]:
        pipe = r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(keys.job(job_id))
        return [Job.from_hash(raw) if raw else None for raw in await pipe.execute()]

    live = await read_page(r, keys.tenant_index(tenant), cursor, limit, load, filters.keep)

    def read() -> tuple[list[tuple[int, Job]], str | None]:
        with engines.shared(database_url).connect() as connection:
            return list_jobs(connection, tenant, limit, cursor, filters)

    try:
        recorded, recorded_next = await asyncio.to_thread(read)
    except sa.exc.SQLAlchemyError as exc:  # history delayed, never the live jobs
        log.warning("job history cannot be read; listing Redis only: %s", str(exc).splitlines()[0])
        return Page(live.items, live.next_cursor)
    found: dict[str, tuple[Position, Job]] = {job.id: ((ms, job.id), job) for ms, job in recorded}
    for job in live.items:  # the live record wins: it is the same or newer
        found[job.id] = ((int(job.created_at * 1000), job.id), job)
    items = sorted(found.values(), key=lambda item: item[0], reverse=True)
    stops: list[Position] = []
    if live.next_cursor:
        score, member = decode_cursor(live.next_cursor)
        stops.append((int(score), member))
    if recorded_next:
        score, member = decode_cursor(recorded_next)
        stops.append((int(score), member))
    if after is not None:
        items = [item for item in items if item[0] < (int(after[0]), after[1])]
    stop = max(stops) if stops else None
    if stop is not None:
        items = [item for item in items if item[0] >= stop]
    page = items[:limit]
    if len(items) > limit or (stop is not None and page):
        return Page([job for _, job in page], encode_cursor(*page[-1][0]))
    return Page([job for _, job in page], encode_cursor(*stop) if stop is not None else None)
