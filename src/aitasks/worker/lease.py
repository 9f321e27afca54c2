"""Leases: every worker's heartbeat names the jobs it holds; a worker silent for ``AITASKS_LEASE_S`` loses them.

Each beat of the monitor (worker/monitor.py) writes ``aitasks:lease:<worker>``: the ids of the jobs the
worker holds (running, reserved and waiting for a countdown), expiring ``lease_s`` after the beat, and
the name in ``aitasks:leases``. A job's message stays in kombu's ``unacked`` hash while a worker holds
it; kombu alone gives it back only after the visibility timeout (960 s here, kombu#337). The recovery
pass (worker/sweep.py, one live worker at a time) takes back instead every unacked delivery older than
the lease that no live lease names: the worker that took it died, or its whole host did, or it stopped
answering (SIGSTOP, a swap storm).

Taking a job back is *fenced* (``requeue``, worker/requeue.lua, one atomic step): the delivery leaves
the unacked hash (kombu can no longer restore a second copy), the record's ``generation`` goes up and
its ``run_token`` changes, the job's state is written through the UPDATE script (``RETRY`` once it had
started, with its event; ``PENDING`` kept otherwise), and the message pushed again carries the new
generation. The state comes before the push in that one step, so a client always sees ``RETRY`` between
the lost run and the new one: an idle worker cannot claim the job first. So the late
original, if it comes back, writes nothing (every write of a run carries its token, jobs/end_state.lua),
and an older copy of the message is acked without running (its generation is stale). The new run counts
the lost delivery as the worker-lost path does (``deliveries``), so the poison cap
(``AITASKS_MAX_WORKER_LOSSES``) holds, and it runs at once, as a redelivery after a lost worker does.
"""

from __future__ import annotations

import base64
import logging
import time
import uuid
from typing import Any

import orjson
import redis
from celery.worker import state as worker_state

from aitasks.jobs import keys
from aitasks.jobs.messages import RUN_JOB_TASK, job_message
from aitasks.jobs.models import Status
from aitasks.jobs.store import JobStore

log = logging.getLogger(__name__)
FORGET_AFTER_S = 300.0  # names in the leases set this long past their expiry are dropped (clock skew room)
TERMINAL = {Status.SUCCESS.value, Status.FAILURE.value, Status.REVOKED.value}
UNACKED_PAGE = 200  # deliveries examined in one pass (the oldest first)


def held_job_ids() -> list[str]:
    """The jobs this worker process holds: running, reserved, and waiting for their countdown (ETA)."""
    requests = [*worker_state.reserved_requests, *worker_state.active_requests,
                *getattr(worker_state, "scheduled_requests", ())]
    return sorted({str(r.id) for r in requests if getattr(r, "id", None)})


def renew(r: redis.Redis, name: str, held: list[str], lease_s: float) -> None:
    """One heartbeat of the lease: what this worker holds, good for ``lease_s``."""
    now = time.time()
    pipe = r.pipeline(transaction=True)
    pipe.set(keys.lease(name), orjson.dumps(held), px=max(1, int(lease_s * 1000)))
    pipe.zadd(keys.LEASES, {name: now + lease_s})
    pipe.zremrangebyscore(keys.LEASES, "-inf", now - FORGET_AFTER_S)
    pipe.execute()


def live_jobs(r: redis.Redis) -> set[str]:
    """Every job a live lease names. The lease key's expiry (on the Redis server's clock) decides liveness;
    the sorted set only lists the names, so no keyspace SCAN."""
    names: list[Any] = list(r.zrangebyscore(keys.LEASES, time.time() - FORGET_AFTER_S, "+inf"))
    if not names:
        return set()
    held: set[str] = set()
    for raw in r.mget([keys.lease(str(_text(n))) for n in names]):
        if raw:
            held.update(orjson.loads(raw))
    return held


def with_generation(message: str | dict[str, Any], generation: int) -> str:
    """The job's Celery message with ``generation`` among its kwargs (``run_job(job_id, generation=n)``) and
    a fresh delivery tag; the rest (retries, limits) as it was."""
    m: dict[str, Any] = orjson.loads(message) if isinstance(message, str) else dict(message)
    args, kwargs, embed = orjson.loads(base64.b64decode(m["body"]))
    kwargs = {**kwargs, "generation": generation}
    m["body"] = base64.b64encode(orjson.dumps([args, kwargs, embed])).decode()
    m["headers"] = {**m.get("headers", {}), "kwargsrepr": repr(kwargs)}
    m["properties"] = {**m.get("properties", {}), "delivery_tag": str(uuid.uuid4())}
    return orjson.dumps(m).decode()


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def requeue(r: redis.Redis, store: JobStore, job_id: str, reason: str, message: dict[str, Any] | None = None,
            queue: str | None = None, tag: str = "") -> bool:
    """Queue ``job_id`` again, fenced (see the module's docstring). ``message``/``tag``: its delivery in
    kombu's unacked hash (taken out in the same step); without them (an orphan, worker/sweep.py) a message
    is built from the record. A delivery of a job that ended meanwhile is only dropped. True if queued."""
    h = [_text(v) for v in r.hmget(keys.job(job_id), "status", "generation", "queue", "soft_time_limit_s",
                                   "time_limit_s")]
    status, generation = h[0], int(h[1] or 0)
    queue = queue or h[2] or "cpu"
    if status is None or status in TERMINAL:
        built = ""  # nothing to run: the script only drops the leftover delivery
    elif message is not None:
        built = with_generation(message, generation + 1)
    else:
        soft, hard = float(h[3] or 0), float(h[4] or 0)
        built = with_generation(job_message(job_id, queue, soft, hard), generation + 1)
    token = f"requeued-{generation + 1}-{uuid.uuid4().hex[:8]}"
    # The state (RETRY once it had started) is written in the same step: no new run claims the job before it.
    if not store.requeue(job_id, queue, generation, built, tag, token, reason):
        return False
    log.warning("job %s queued again (generation %d): %s", job_id, generation + 1, reason)
    return True


def recover_unacked(r: redis.Redis, store: JobStore, live: set[str], lease_s: float) -> int:
    """Take back the deliveries no live lease holds, older than the lease (their worker is gone).
    Returns how many jobs were queued again. With RabbitMQ as the broker the unacked hash stays empty: the
    broker itself gives a dead consumer's unacknowledged message to another when its connection dies."""
    tags: list[Any] = list(r.zrangebyscore(keys.UNACKED_INDEX, "-inf", time.time() - lease_s, start=0,
                                           num=UNACKED_PAGE))
    if not tags:
        return 0
    requeued = 0
    for tag, raw in zip(tags, r.hmget(keys.UNACKED, tags)):
        if raw is None:  # acknowledged meanwhile (kombu cleans its index itself)
            continue
        try:
            message, _exchange, routing_key = orjson.loads(raw)
            if message["headers"].get("task") != RUN_JOB_TASK:
                continue
            job_id = str(message["headers"]["id"])
        except (ValueError, KeyError, TypeError):
            log.warning("unacked delivery %r is not a job message; left to kombu", tag)
            continue
        if job_id in live:
            continue
        reason = (f"The worker holding this job stopped heartbeating for {lease_s:g} s; "
                  "the job was queued again")
        if requeue(r, store, job_id, reason, message=message, queue=routing_key, tag=_text(tag) or ""):
            requeued += 1
    return requeued
