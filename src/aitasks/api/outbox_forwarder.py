"""Submits that survive a Redis outage: take them into the outbox (api/outbox.py), forward them when Redis is back.

``OutboxForwarder`` is the submit service's side of the outbox: ``down`` says Redis was found unreachable
(set by a failed submit, cleared by a PING that answers), ``take`` stores a submit durably, and a background
task forwards the outbox oldest first through the same CREATE script a direct submit uses. CREATE answers
"already exists" for a job id it has recorded (a create whose reply was lost did run), so forwarding is
idempotent by job id: never a second record or queue message. Nothing here runs jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aitasks.api.outbox import Entry, Outbox, OutboxFile, OutboxFull
from aitasks.errors import ServiceUnavailable
from aitasks.jobs.artifacts import ArtifactBackend
from aitasks.jobs.models import Job
from aitasks.jobs.store import AsyncJobStore

log = logging.getLogger(__name__)

BATCH = 64
PROBE_INTERVAL_S = 0.5  # how often an unreachable Redis is tried again
ORPHANS_INTERVAL_S = 10.0
TOUCH_INTERVAL_S = 30.0  # well under the workers' sweep age (120 s)


def unreachable(exc: BaseException) -> bool:
    """A Redis error that means "not reachable now" (refused, timed out, lost, loading), not a refusal."""
    return isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError)


class OutboxForwarder:
    def __init__(self, outbox: Outbox, store: AsyncJobStore, artifacts: ArtifactBackend, probe_timeout_s: float):
        self.outbox = outbox
        self.store = store
        self.artifacts = artifacts
        self.probe_timeout_s = probe_timeout_s
        self.down = False  # Redis was found unreachable: submits go straight to the outbox
        self.forwarded = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._adopted: list[OutboxFile] = []

    def start(self) -> None:
        """Start forwarding (at once: an API restarted with a non-empty outbox drains it)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="outbox-forwarder")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def holding(self) -> bool:
        """Whether submits are waiting in this process's outbox."""
        return self.outbox.count > 0

    def mark_down(self, exc: BaseException | None = None) -> None:
        if not self.down:
            log.warning("Redis unreachable (%s): submits go to the outbox until it answers", exc)
        self.down = True
        self._wake.set()

    async def take(self, job: Job, message: str, pending_ttl_s: int, idem: str | None, idem_ttl_s: int,
                   files: bool) -> None:
        """Store a submit durably for later. Raises ServiceUnavailable (503) when the outbox is full."""
        try:
            await self.outbox.add(job, message, pending_ttl_s, idem, idem_ttl_s, files)
        except OutboxFull as exc:
            raise ServiceUnavailable(
                f"The job store (Redis) is unreachable and this API's outbox of waiting submits is full ({exc}, "
                "AITASKS_OUTBOX_MAX_MB); nothing was accepted. Try again shortly.",
                headers={"Retry-After": "5"}) from None
        self._wake.set()

    async def find(self, job_id: str) -> Job | None:
        entry = await self.outbox.find(job_id)
        return entry.job if entry else None

    async def find_key(self, tenant: str, idem: str) -> Job | None:
        entry = await self.outbox.find_key(tenant, idem)
        return entry.job if entry else None

    # --- forwarding ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        last_orphans = last_touch = 0.0
        while True:
            try:
                now = time.monotonic()
                if now - last_orphans >= ORPHANS_INTERVAL_S:
                    last_orphans = now
                    self._adopted.extend(await self.outbox.orphans())
                if now - last_touch >= TOUCH_INTERVAL_S and (self.holding or self._adopted):
                    last_touch = now
                    await self._touch_inputs()
                if not (self.down or self.holding or self._adopted):
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), ORPHANS_INTERVAL_S)
                    continue
                if not await self._redis_answers():
                    await asyncio.sleep(PROBE_INTERVAL_S)
                    continue
                if self.down:
                    log.warning("Redis answers again: forwarding %d outboxed submit(s)", self.outbox.count)
                    self.down = False
                for file in [self.outbox.file, *self._adopted]:
                    if not await self._drain(file):
                        break
                    if file is not self.outbox.file:
                        self._adopted.remove(file)
                        await self.outbox.close_file(file)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug or a full disk must not end forwarding for good
                log.exception("outbox forwarding failed; trying again")
                await asyncio.sleep(1.0)

    async def _redis_answers(self) -> bool:
        try:
            await asyncio.wait_for(self.store.r.ping(), self.probe_timeout_s)
            return True
        except (RedisError, OSError, TimeoutError):
            return False

    async def _drain(self, file: OutboxFile) -> bool:
        """Forward the file's submits oldest first; True once it is empty, False when Redis stopped answering."""
        while True:
            batch = await self.outbox.oldest(file, BATCH)
            if not batch:
                return True
            done: list[Entry] = []
            try:
                for entry in batch:
                    await self._forward(entry)
                    done.append(entry)
            except RedisError as exc:
                if unreachable(exc):
                    self.mark_down(exc)
                else:  # e.g. Redis at its maxmemory: it answers but refuses; try again shortly
                    log.warning("Redis refused an outboxed submit (%s); trying again", exc)
                    await asyncio.sleep(1.0)
                return False
            finally:
                if done:
                    await self.outbox.remove(file, done)
                    self.forwarded += len(done)

    async def _forward(self, entry: Entry) -> None:
        job = entry.job
        created, stored_id = await self.store.create(job, entry.message, entry.pending_ttl_s, entry.idem,
                                                     entry.idem_ttl_s)
        if not created and stored_id != job.id:
            # Its Idempotency-Key named a job accepted before the outage (the outbox could not see it):
            # that job stands for it, as a resend would have been answered.
            log.warning("outboxed job %s not forwarded: its Idempotency-Key belongs to job %s", job.id, stored_id)

    async def _touch_inputs(self) -> None:
        ids: list[str] = []
        for file in [self.outbox.file, *self._adopted]:
            ids.extend(await self.outbox.with_files(file))
        # A folder touched, or a marker written in the bucket (jobs/artifact_store.py touch_jobs).
        await asyncio.to_thread(self.artifacts.touch_jobs, ids)
