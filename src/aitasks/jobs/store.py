"""Job records in Redis: create, read, change, list. The record is the truth, not Celery's backend.

``AsyncJobStore`` serves the API (redis.asyncio); ``JobStore`` serves workers and the CLI (sync).
Both share the key layout, the record encoding and the Lua scripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import redis
import redis.asyncio as aredis

from aitasks.jobs import keys, run_scripts, scripts
from aitasks.jobs.models import Job, Status
from aitasks.jobs.pager import read_page
from aitasks.jobs.pipelined import PipelinedRedis
from aitasks.jobs.script_call import ScriptConnection


def update_args(fields: dict[str, Any], ttl_s: int | None, fence: str = "") -> list[Any]:
    """The UPDATE script's ARGV: ttl, the field pairs, then the fence if any (see jobs/end_state.lua)."""
    args: list[Any] = ["" if ttl_s is None else str(ttl_s)]
    for name, value in fields.items():
        if isinstance(value, (dict, list)):
            value = orjson.dumps(value).decode()
        elif value is None:
            value = ""
        elif isinstance(value, float):
            value = repr(value)
        args.extend((name, str(value) if not isinstance(value, str) else value))
    if fence:
        args.extend(("@fence", fence))
    return args


def record_ttl_s(pending_ttl_s: int) -> int:
    """How long an unfinished job's record lives: its pending limit and a margin, so the recovery pass
    (worker/sweep.py) ends a job that waited too long FAILURE before its record could expire."""
    return pending_ttl_s + max(600, pending_ttl_s // 10)


class QueueFull(Exception):
    """CREATE refused the job: its tenant already has ``max_queued`` jobs queued (api/flow_control.py: 429)."""

    def __init__(self, max_queued: int):
        super().__init__(f"max_queued {max_queued} reached")
        self.max_queued = max_queued


@dataclass
class Started:
    """What ``JobStore.start`` found: ``code`` (the claim's seq when > 0; see jobs/start.lua), the delivery's
    number (0 when not counted) and the record (after the claim; as it is for -3 and -4; None otherwise)."""

    code: int
    deliveries: int
    job: Job | None


@dataclass
class Page:
    jobs: list[Job]
    next_cursor: str | None


class AsyncJobStore:
    """The API's view of job records.

    ``pipe``, when given, carries the CREATE script (every submit): many requests' calls share one
    connection and leave together (see jobs/pipelined.py). Everything else goes through ``client``.
    ``history=False`` (AITASKS_HISTORY_ENABLED=false) leaves the store of record's hand-off out of UPDATE.
    ``outbox=True`` (RabbitMQ is the broker): a job's message goes to the broker outbox, not its queue list.
    ``fair=False`` (AITASKS_FAIR_DISPATCH=false): a job's message goes straight onto its queue, FIFO across
    tenants; otherwise the job waits in its tenant's line (jobs/dispatch.py)."""

    def __init__(self, client: aredis.Redis, pipe: PipelinedRedis | None = None, history: bool = True,
                 outbox: bool = False, fair: bool = True):
        self.r = client
        self.pipe = pipe
        self.outbox = outbox
        self.fair = fair
        self._create = client.register_script(scripts.CREATE)
        self._update = client.register_script(scripts.update_script(history))

    async def create(
        self, job: Job, celery_message: str, pending_ttl_s: int, idempotency_key: str | None,
        idempotency_ttl_s: int, claim: bool = False, max_queued: int | None = None,
    ) -> tuple[bool, str]:
        """Accept a job atomically. Returns (created, job_id); job_id is the first job's on a repeat key, and
        (False, job.id) when this job id is already recorded (a resend or an outbox forward: not created twice).
        ``claim``: take the idempotency key over when its job is gone from Redis (the caller found it in
        no store); otherwise a repeat key names its first job even after Redis let that job go.
        ``max_queued``: the deployment's default (the tenant's own cached value wins); the tenant at its limit
        raises QueueFull. None: no check (a submit the outbox accepted while Redis was away)."""
        idem = keys.idempotency(job.tenant, idempotency_key) if idempotency_key else ""
        created_ms = int(job.created_at * 1000)
        oldest_ms = created_ms - pending_ttl_s * 1000
        flat: list[str] = []
        for k, v in job.to_hash().items():
            flat.extend((k, v))
        if idempotency_key:  # its digest, kept with the job's history (store/records.py)
            flat.extend(("idempotency_key", idempotency_key))
        script_keys = [keys.job(job.id), keys.tenant_index(job.tenant), keys.queue_list(job.queue, self.outbox), idem,
                       keys.METRICS_SUBMITTED, keys.tenant_queued(job.tenant), keys.tenant_limits(job.tenant)]
        args: list[str | int | bytes] = [
            record_ttl_s(pending_ttl_s), created_ms, job.id, celery_message, idempotency_ttl_s, job.type, oldest_ms,
            orjson.dumps(flat), "1" if claim else "0", "" if max_queued is None else str(max_queued),
            "1" if self.fair else "0", job.queue, job.tenant, job.priority]
        if self.pipe is not None:
            created, job_id = await self.pipe.evalsha(self._create.sha, scripts.CREATE, script_keys, args)
        else:
            created, job_id = await self._create(keys=script_keys, args=args)
        if int(created) < 0:
            raise QueueFull(int(job_id))
        return bool(created), job_id.decode() if isinstance(job_id, bytes) else job_id

    async def get(self, job_id: str) -> Job | None:
        raw = await self.r.hgetall(keys.job(job_id))
        return Job.from_hash(raw) if raw else None

    async def seq(self, job_id: str) -> int | None:
        """The record's sequence number (None: no record): what an open stream's quiet re-read compares
        before it reads the whole record. One field, on the pipelined connection when there is one: 10,000
        open streams re-read every 15 s, ~670 reads a second (issue 22)."""
        if self.pipe is not None:
            raw = await self.pipe.execute("HGET", keys.job(job_id), "seq")
        else:
            raw = await self.r.hget(keys.job(job_id), "seq")  # type: ignore[misc]
        return int(raw) if raw is not None else None

    async def webhook_deliveries(self, job_id: str) -> list[dict[str, Any]]:
        return [orjson.loads(x) for x in await self.r.lrange(keys.webhook_log(job_id), 0, -1)]

    async def update(self, job_id: str, fields: dict[str, Any], ttl_s: int | None = None) -> int:
        return int(await self._update(keys=[keys.job(job_id), keys.events(job_id)], args=update_args(fields, ttl_s)))

    async def list(
        self, tenant: str, limit: int, cursor: str | None, status: set[Status] | None, job_type: str | None,
        scan_limit: int = 2000,
    ) -> Page:
        """The tenant's jobs, newest first (ties by id, descending), after ``cursor``.

        Filters are applied while scanning, over at most ``scan_limit`` ids a request: a page may then
        hold fewer than ``limit`` jobs and still carry a ``next_cursor`` to go on from.
        """
        async def load(ids: list[str]) -> list[Job | None]:
            pipe = self.r.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(keys.job(job_id))
            return [Job.from_hash(raw) if raw else None for raw in await pipe.execute()]

        def keep(job: Job) -> bool:
            return not (status and job.status not in status) and not (job_type and job.type != job_type)

        page = await read_page(self.r, keys.tenant_index(tenant), cursor, limit, load, keep, scan_limit=scan_limit)
        return Page(page.items, page.next_cursor)


class JobStore:
    """The workers' (and CLI's) view of job records (``history``, ``outbox`` and ``fair`` as for AsyncJobStore).
    A run's scripts (``update``, ``start``, ``run_update``) go onto a connection kept for them
    (jobs/script_call.py): two calls every job, where the client's command layer cost a tenth of its CPU."""

    def __init__(self, client: redis.Redis, history: bool = True, outbox: bool = False, fair: bool = True):
        self.r = client
        self.outbox = outbox
        self.fair = fair
        self._update = client.register_script(scripts.update_script(history))
        self._fan_out = client.register_script(scripts.FAN_OUT)
        self._start = client.register_script(run_scripts.start_script(history))
        self._run_update = client.register_script(run_scripts.run_update_script(history))
        self._requeue = client.register_script(run_scripts.requeue_script(history))
        self._scripts = ScriptConnection(client)

    def get(self, job_id: str) -> Job | None:
        raw = self.r.hgetall(keys.job(job_id))
        return Job.from_hash(raw) if raw else None

    def update(self, job_id: str, fields: dict[str, Any], ttl_s: int | None = None, fence: str = "") -> int:
        """Apply ``fields`` (see jobs/end_state.lua); ``fence`` 'run:<token>' makes it a run's own write,
        refused (-2) once that run lost the job (the recovery queued it again, or a newer run claimed it)."""
        args = update_args(fields, ttl_s, fence)
        return int(self._scripts.call(self._update, [keys.job(job_id), keys.events(job_id)], args))

    def start(self, job_id: str, generation: int, token: str, max_losses: int, now: float,
              claim: dict[str, Any]) -> Started:
        """A delivery begins its run in one round trip (jobs/start.lua): checked, counted, ``claim`` written
        with the fence ``claim:<generation>:<token>``, the record read back."""
        args = [generation, token, max_losses, repr(now), *update_args(claim, None)[1:]]
        code, deliveries, pairs = self._scripts.call(self._start, [keys.job(job_id), keys.events(job_id)], args)
        raw = dict(zip(pairs[::2], pairs[1::2]))
        return Started(int(code), int(deliveries), Job.from_hash(raw) if raw else None)

    def run_update(self, job_id: str, fields: dict[str, Any], fence: str, ttl_s: int | None = None,
                   end_delivery: bool = False, lend_slot: bool = False) -> tuple[int, bool]:
        """A run's own write (jobs/run_update.lua): ``update`` with the fence, the delivery's end counted too
        when ``end_delivery``, the job's dispatch slot lent until its next run when ``lend_slot`` (a retry
        waiting out its countdown); returns the update's answer and whether a cancel was asked for."""
        args = ["1" if end_delivery else "0", "1" if lend_slot else "0", *update_args(fields, ttl_s, fence)]
        applied, cancel = self._scripts.call(self._run_update, [keys.job(job_id), keys.events(job_id)], args)
        return int(applied), bool(cancel)

    def requeue(self, job_id: str, queue: str, generation: int, message: str, tag: str, token: str,
                reason: str) -> bool:
        """The recovery's fenced requeue (worker/requeue.lua; worker/lease.py builds ``message``): the delivery
        ``tag`` leaves kombu's unacked hash, the generation (read as ``generation``) goes up, ``token`` becomes
        the run token, the state is written (``reason``; RETRY once started) and ``message`` is pushed onto
        ``queue``'s list, in one step. False (nothing pushed or written) when the record moved on."""
        done = self._requeue(keys=[keys.job(job_id), keys.events(job_id), keys.queue_list(queue, self.outbox),
                                   keys.UNACKED, keys.UNACKED_INDEX],
                             args=[generation, message, tag, token, reason])
        return int(done) == 1

    def field(self, job_id: str, name: str) -> str | None:
        value = self.r.hget(keys.job(job_id), name)
        return value.decode() if isinstance(value, bytes) else value

    def end_delivery(self, job_id: str) -> None:
        self.r.hincrby(keys.job(job_id), "finished_deliveries", 1)

    def fan_out(self, parent: Job, children: list[tuple[Job, str]], callback: str, pending_ttl_s: int,
                waiting_message: str) -> int:
        """Create and queue ``children`` (each a record and its Celery message) of ``parent`` atomically,
        once. Returns 1 (created), 0 (they existed: a redelivery), -1 (parent finished), -2 (cancelled)."""
        spec = [{"id": c.id, "type": c.type, "queue": c.queue, "list": keys.queue_list(c.queue, self.outbox),
                 "message": message, "hash": [x for pair in c.to_hash().items() for x in pair]}
                for c, message in children]
        created_ms = int(max((c.created_at for c, _ in children), default=parent.created_at) * 1000)
        return int(self._fan_out(
            keys=[keys.job(parent.id), keys.events(parent.id), keys.tenant_index(parent.tenant),
                  keys.METRICS_SUBMITTED],
            args=[callback, created_ms, record_ttl_s(pending_ttl_s), orjson.dumps(spec), waiting_message,
                  keys.queue_list(parent.queue, self.outbox), "1" if self.fair else "0"]))

    def children(self, parent_id: str) -> list[Job | None] | None:
        """The parent's child records in order (None for an expired one); None before its fan-out."""
        raw = self.r.hget(keys.job(parent_id), "children")
        if not raw:
            return None
        ids: list[str] = orjson.loads(raw)
        pipe = self.r.pipeline(transaction=False)
        for child_id in ids:
            pipe.hgetall(keys.job(child_id))
        return [Job.from_hash(h) if h else None for h in pipe.execute()]
