"""A thread in each worker's main process: heartbeat, hard cancel after the grace period, file sweeping.

- Heartbeat: ``aitasks:worker:<name>`` with the queues served and the jobs running, expiring after
  three missed beats, and the name in the ``aitasks:workers`` sorted set scored by that expiry, so
  /readyz, /metrics and /api/v1/system find the workers without a keyspace-wide SCAN.
- Cancel: a running job is asked to stop through its record (``ctx`` raises at its next progress
  report). One that has not stopped ``cancel_grace_s`` after the cancel (or after its run started, if
  later) is marked REVOKED and its pool process
  killed *by the request object that runs it*, so the kill cannot hit the next job in that process
  (the hazard of ``revoke(terminate=True)``, celery#2142).
- Sweep: folders of jobs whose files are no longer kept are removed, and uploads (/v1/files) whose records
  expired (worker/artifact_sweep.py); after Redis lost its data, the storage counters are rebuilt
  (worker/storage_recount.py).
- Lease and recovery: each beat renews the worker's lease (the jobs it holds, worker/lease.py); one
  worker at a time runs the recovery pass (worker/sweep.py) that takes back the jobs of workers whose
  lease expired, queues again the jobs nothing holds and ends FAILURE the jobs that waited too long.
- Dispatch: one worker at a time runs the fair dispatcher's tick (worker/dispatcher.py) after its beat.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import orjson
from celery import signals
from celery.worker import state as worker_state

from aitasks.jobs import keys
from aitasks.jobs.models import Status
from aitasks.worker import artifact_sweep, lease, storage_recount
from aitasks.worker.dispatcher import Dispatcher
from aitasks.worker.redis_outage import REDIS_DOWN
from aitasks.worker.resources import resources
from aitasks.worker.sweep import Recovery

log = logging.getLogger(__name__)
SWEEP_EVERY_S = 60.0
# Names in the workers set whose heartbeat expired longer ago than this are dropped; generous, so a worker
# whose clock runs ahead never drops a live one (readers go by the heartbeat key, not by this score).
FORGET_AFTER_S = 60.0


class WorkerMonitor(threading.Thread):
    def __init__(self, consumer: Any):
        super().__init__(name="aitasks-monitor", daemon=True)
        self.consumer = consumer
        self.hostname: str = consumer.hostname
        self.queues = sorted(q.name for q in consumer.task_consumer.queues) if consumer.task_consumer else []
        self.stopping = threading.Event()
        self.started_at = time.time()
        self._last_sweep = 0.0
        self.reachable_since: float | None = None  # since when every beat reached Redis (monotonic)
        self.recovery: Recovery | None = None
        self._killing: set[str] = set()  # ids of the requests whose terminate is queued or done

    def run(self) -> None:
        res = resources()
        lease_s = res.settings.lease_s
        interval = min(res.settings.worker_heartbeat_s, lease_s / 3)
        self.recovery = Recovery(self.hostname, lease_s, res.settings.pending_ttl_s)
        dispatcher = Dispatcher(self.hostname, interval)
        while not self.stopping.is_set():
            try:
                self.beat()
                dispatcher.tick(res.redis, res.settings, time.time())
                self.enforce_cancel()
                if time.monotonic() - self._last_sweep > SWEEP_EVERY_S:
                    self._last_sweep = time.monotonic()
                    self.sweep()
                self.recover()
            except Exception as exc:  # never let bookkeeping kill the worker
                if isinstance(exc, REDIS_DOWN):
                    self.reachable_since = None
                log.warning("worker monitor: %s", exc)
            self.stopping.wait(interval)
        try:
            pipe = resources().redis.pipeline(transaction=True)
            pipe.delete(keys.worker(self.hostname))
            pipe.zrem(keys.WORKERS, self.hostname)
            pipe.execute()
        except Exception:
            pass
        # A warm shutdown waits for the running jobs: their lease is kept until the process exits.
        while True:
            try:
                lease.renew(res.redis, self.hostname, lease.held_job_ids(), lease_s)
            except Exception as exc:
                log.debug("lease not renewed while stopping: %s", exc)
            time.sleep(interval)

    def recover(self) -> None:
        """The recovery pass (worker/sweep.py), once this worker has reached Redis for a whole lease."""
        res = resources()
        now = time.monotonic()
        if self.reachable_since is None:
            self.reachable_since = now
        if self.recovery is not None:
            self.recovery.tick(res.redis, res.store, now - self.reachable_since)

    def active(self) -> list[Any]:
        return [r for r in list(worker_state.active_requests) if r.args]

    def beat(self) -> None:
        res = resources()
        info = {
            "name": self.hostname, "host": socket.gethostname(), "pid": os.getpid(), "queues": self.queues,
            "concurrency": getattr(self.consumer.pool, "num_processes", None) or res.settings.worker_concurrency,
            "started_at": self.started_at,
            "active": [r.args[0] for r in self.active()], "seen_at": time.time(),
        }
        ttl = max(3, int(3 * res.settings.worker_heartbeat_s))
        now = time.time()
        pipe = res.redis.pipeline(transaction=True)
        pipe.set(keys.worker(self.hostname), orjson.dumps(info), ex=ttl)
        pipe.zadd(keys.WORKERS, {self.hostname: now + ttl})
        pipe.zremrangebyscore(keys.WORKERS, "-inf", now - FORGET_AFTER_S)
        pipe.execute()
        lease.renew(res.redis, self.hostname, lease.held_job_ids(), res.settings.lease_s)

    def enforce_cancel(self) -> None:
        res = resources()
        now = time.time()
        active = self.active()
        self._killing &= {request.id for request in active}
        for request in active:
            job_id = request.args[0]
            if request.id in self._killing:  # its kill is queued on the consumer's loop (in_consumer_loop)
                continue
            flag = res.store.field(job_id, "cancel_requested_at")
            if not flag or not request.time_start:  # (not yet running in a pool process: nothing to kill)
                continue
            # The grace runs from the cancel or from this run's start, whichever is later: a run that began
            # after the cancel (a parent's callback once its children ended) sees the flag and ends REVOKED
            # "Cancelled" itself, so it must not be killed as one that ignored it.
            waited = now - max(float(flag), float(request.time_start))
            if waited < res.settings.cancel_grace_s:
                continue
            log.warning("job %s ignored cancel for %.0fs; killing its process", job_id, waited)
            res.store.end_delivery(job_id)
            job = res.store.get(job_id)
            if job:
                res.store.update(job_id, {
                    "status": Status.REVOKED.value, "finished_at": now,
                    "message": "Cancelled; the job did not stop in time and was terminated",
                }, ttl_s=job.retention_s)
            self._killing.add(request.id)
            self.in_consumer_loop(request.terminate, self.consumer.pool, signal="SIGKILL")

    def in_consumer_loop(self, call: Any, *args: Any, **kwargs: Any) -> None:
        """Run ``call`` on the consumer's event loop thread. A request's terminate acknowledges its message and
        updates the pool's and the prefetch window's bookkeeping, none of which is thread-safe: called from
        this thread it raced the loop now and then, and the worker never fetched another message."""
        hub = getattr(self.consumer, "hub", None)
        if hub is None:  # a pool without an event loop (solo, threads): nothing runs beside this thread
            call(*args, **kwargs)
            return
        hub.call_soon(lambda: call(*args, **kwargs))

    def sweep(self) -> None:
        res = resources()
        history = res.settings.resolved_database_url if res.settings.history_enabled else None
        artifact_sweep.sweep(res.redis, res.artifacts, history)
        storage_recount.start_if_lost(res.redis, res.artifacts, history, self.hostname)


_monitor: WorkerMonitor | None = None


@signals.worker_ready.connect
def _start_monitor(sender: Any = None, **_: Any) -> None:
    global _monitor
    _monitor = WorkerMonitor(sender)
    _monitor.start()


@signals.worker_shutting_down.connect
def _stop_monitor(**_: Any) -> None:
    if _monitor:
        _monitor.stopping.set()
