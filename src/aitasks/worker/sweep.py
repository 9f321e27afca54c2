"""The recovery pass: no job held by a dead worker for long, no job forgotten.

One live worker at a time runs it (``aitasks:sweeper``, a lock renewed by its holder, good for a few
passes), every few seconds, from its monitor thread:

1. **Leases** (worker/lease.py): deliveries in kombu's unacked hash that no live lease names, older than
   ``AITASKS_LEASE_S``, are queued again, fenced. A worker host that dies gives its jobs back in
   ``lease_s`` plus one pass, not after the 960 s visibility timeout, which stays the last resort.
2. **Orphans**: jobs the index of unfinished jobs (``aitasks:jobs:live``, written by CREATE and the
   UPDATE script's terminal fragment) lists as ``PENDING``, ``RETRY`` or ``PROCESSING`` that no queue
   list, no unacked delivery and no live lease holds (a message lost with Redis's last second, a delivery
   lost between kombu's BRPOP and its unacked write) are queued again, fenced. Only jobs older than the
   grace (``lease_s``) are examined, and a job must be found orphaned by two passes in a row with an
   unchanged record, so a job on its way (a message being taken) is not doubled. A parent job waiting
   for its children is held by them. With RabbitMQ as the broker (AITASKS_BROKER_URL) its queues cannot
   be read from here: a job waiting there (PENDING, RETRY) is left to it (durable quorum queues, messages
   published with confirms from the outbox, worker/relay.py); a PROCESSING job that no lease, delivery
   or outbox entry holds is still queued again, fenced.

   A job waiting in its tenant's line (fair dispatch, jobs/dispatch_lib.lua) is held by that line.
3. **Overdue**: a job still ``PENDING`` longer than its pending limit (``AITASKS_PENDING_TTL_S``) after it
   was accepted ends ``FAILURE`` (``PendingTimeout``), with its event, webhook and history as any end:
   it never silently expires (its record lives a margin longer, jobs/store.py ``record_ttl_s``).

The pass acts only after this worker has reached Redis for a whole lease period in a row: after an
outage every lease has expired, and the live workers must first renew theirs.
"""

from __future__ import annotations

import logging
import time

import redis

from aitasks.jobs import keys, lua
from aitasks.jobs.models import Status
from aitasks.jobs.store import JobStore
from aitasks.worker import lease

log = logging.getLogger(__name__)
HELD = lua.load("aitasks.worker", "held.lua")
# Take the lock, or renew it when this worker holds it already (one step: never renew another's).
TAKE_LOCK = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]); return 1 end
return 0
"""
PAGE = 500  # unfinished jobs examined per pass; the next pass goes on from there
WAITING = {Status.PENDING.value, Status.RETRY.value}
ORPHAN = "Queued again: no queue, no worker and no delivery held this job (its message was lost)"
OVERDUE_PAGE = 200  # overdue jobs ended per pass


def overdue_message(limit_s: float) -> str:
    return (f"Waited longer than the pending limit ({limit_s:g} s) without being started: no worker slot "
            "became free for it in time")


def pass_every_s(lease_s: float) -> float:
    """Every few seconds, and several times per lease."""
    return min(5.0, max(0.5, lease_s / 5))


class Recovery:
    def __init__(self, name: str, lease_s: float, pending_limit_s: float | None = None):
        self.name = name
        self.lease_s = lease_s
        self.pending_limit_s = pending_limit_s
        self.every_s = pass_every_s(lease_s)
        self._last = 0.0
        self._offset = 0
        self._suspects: dict[str, bytes | None] = {}  # job id -> its record's seq when found orphaned

    def tick(self, r: redis.Redis, store: JobStore, reachable_for_s: float) -> None:
        """Run a pass if one is due and this worker holds the lock (call it after each heartbeat)."""
        if time.monotonic() - self._last < self.every_s:
            return
        self._last = time.monotonic()
        if not self.take_lock(r):
            self._suspects.clear()  # another worker sweeps; its findings are its own
            return
        if self.pending_limit_s:
            self.fail_overdue(r, store, self.pending_limit_s)
        if reachable_for_s < self.lease_s:
            return
        live = lease.live_jobs(r)
        lease.recover_unacked(r, store, live, self.lease_s)
        self.sweep_orphans(r, store, live)

    def take_lock(self, r: redis.Redis) -> bool:
        ttl_ms = int(max(3 * self.every_s, 2.0) * 1000)
        return bool(r.eval(TAKE_LOCK, 1, keys.SWEEPER, self.name, ttl_ms))

    def fail_overdue(self, r: redis.Redis, store: JobStore, limit_s: float) -> int:
        """End FAILURE the jobs accepted more than ``limit_s`` ago that are still PENDING; how many."""
        cutoff_ms = (time.time() - limit_s) * 1000
        failed, offset = 0, 0
        for _ in range(5):  # pages a pass: the oldest live jobs may be long runs, not waiting ones
            raw_ids = r.zrangebyscore(keys.JOBS_LIVE, "-inf", cutoff_ms, start=offset, num=OVERDUE_PAGE)
            if not raw_ids:
                break
            offset += len(raw_ids)
            ids = [i.decode() if isinstance(i, bytes) else str(i) for i in raw_ids]
            pipe = r.pipeline(transaction=False)
            for job_id in ids:
                pipe.hmget(keys.job(job_id), "status", "retention_s")
            for job_id, (status, retention) in zip(ids, pipe.execute()):
                if status not in (b"PENDING", "PENDING"):
                    continue
                written = store.update(job_id, {
                    "status": Status.FAILURE.value, "finished_at": time.time(), "error_type": "PendingTimeout",
                    "error_message": overdue_message(limit_s), "message": "Failed: waited too long for a worker",
                }, ttl_s=int(retention or 3600))
                failed += written > 0
        if failed:
            log.warning("ended %d jobs that waited longer than the pending limit (%g s)", failed, limit_s)
        return failed

    def sweep_orphans(self, r: redis.Redis, store: JobStore, live: set[str]) -> int:
        """Queue again the unfinished jobs nothing holds (see the module's docstring); returns how many."""
        cutoff_ms = (time.time() - self.lease_s) * 1000  # the grace: younger jobs are not looked at
        raw_ids = r.zrangebyscore(keys.JOBS_LIVE, "-inf", cutoff_ms, start=self._offset, num=PAGE)
        self._offset = 0 if len(raw_ids) < PAGE else self._offset + PAGE
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in raw_ids]
        pipe = r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(keys.job(job_id), "status", "children_total", "children_done", "seq")
            for queue in keys.QUEUES:  # in a tenant's line: its message waits in the queue's dispatch hash
                pipe.hexists(keys.dispatch(queue, "messages"), job_id)
        rows = pipe.execute()
        step = 1 + len(keys.QUEUES)
        gone: list[str] = []
        candidates: dict[str, bytes | None] = {}
        for i, job_id in enumerate(ids):
            (status, total, done, seq), waiting = rows[i * step], any(rows[i * step + 1:(i + 1) * step])
            status = status.decode() if isinstance(status, bytes) else status
            if status is None or status in lease.TERMINAL:
                gone.append(job_id)  # expired, or ended by a path that left its index entry
            elif job_id in live or waiting:
                continue
            elif store.outbox and status in WAITING:
                continue  # RabbitMQ holds its message (durable, confirmed) or the outbox does: not looked for
            elif total is not None and int(done or 0) < int(total):
                continue  # a parent waiting for its children: the last one's end queues it
            else:
                candidates[job_id] = seq
        if gone:
            r.zrem(keys.JOBS_LIVE, *gone)
        found = set()
        if candidates:
            lists = (keys.BROKER_OUTBOX,) if store.outbox else keys.QUEUES
            found = {x.decode() if isinstance(x, bytes) else x
                     for x in r.eval(HELD, 1 + len(lists), keys.UNACKED, *lists, *candidates)}
        orphans = {job_id: seq for job_id, seq in candidates.items() if job_id not in found}
        requeued = 0
        for job_id, seq in orphans.items():
            if job_id in self._suspects and self._suspects[job_id] == seq:
                if lease.requeue(r, store, job_id, ORPHAN):
                    requeued += 1
        # Found orphaned for the first time (or changed since): looked at again by the next pass.
        self._suspects = {j: s for j, s in orphans.items() if self._suspects.get(j) != s}
        return requeued
