"""The webhook delivery thread, one in each worker's main process (never in a job's process).

Deliveries are queued in Redis by the script that records each change (jobs/scripts.py), so a job never
waits on a receiver. This thread takes one whenever one of its ``AITASKS_WEBHOOK_SENDERS`` sending threads
is free (BRPOPLPUSH: each goes to one worker of the deployment, moved into the worker's own in-flight list
in the same step), reads the job's record and hands it to that thread, which POSTs the job's status
document, signed with the tenant's secret (worker/webhook_http.py: the address checked again and
connected to as checked, one 10 s deadline per attempt, at most 64 KiB of the answer read). One receiver
(scheme, host, port) gets at most ``AITASKS_WEBHOOK_PER_RECEIVER`` of a worker's attempts at once; a
delivery to a busy receiver is put back, due a second later, so a slow or hostile receiver holds a few
threads for at most a deadline each while everyone else's deliveries go out.
A 5xx, 429, timeout or connection error is retried with exponential backoff (1, 2, 4, 8, 16 s;
at most ``MAX_ATTEMPTS`` tries) through a sorted set of due retries; any other answer, an address the
guard refuses or an oversized answer ends it. Every attempt and its outcome is appended to the job's
delivery log, shown in its status document.
Several workers deliver in parallel, so deliveries of one job may arrive out of order: each carries
the change's ``seq`` (also in ``webhook-id``, ``<task_id>:<seq>:<event>``) to order them by.
Deliveries are at least once: a delivery stays in its worker's in-flight list until the attempt is
recorded. When a worker dies (SIGKILL, OOM, machine lost), its heartbeat key expires and any other
worker's sender moves the dead worker's in-flight deliveries back to the pending list, so the message
is sent again (same ``webhook-id``: receivers deduplicate by it). BRPOPLPUSH/RPOPLPUSH rather than
BLMOVE/LMOVE: the Redis 6.0 of Ubuntu 22.04 has only these.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import redis
from celery import signals

from aitasks import tracing
from aitasks.jobs import keys
from aitasks.jobs.models import Job, Status
from aitasks.jobs.net_guard import IPAddress
from aitasks.jobs.predictions import prediction
from aitasks.jobs.status_document import status_document
from aitasks.jobs.webhooks import sign, tenant_secret
from aitasks.processors.registry import load_all
from aitasks.tracing.job_spans import mark_delivery, webhook_span
from aitasks.worker import webhook_http
from aitasks.worker.resources import resources

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 6
BACKOFF_S = (1, 2, 4, 8, 16)
TIMEOUT_S = 10.0  # the whole attempt: resolve, connect, send, read
DEFER_S = 1.0  # a delivery whose receiver is busy with this worker's attempts is taken again after this
# Take due retries back into the pending list atomically, so two workers never both take one.
# Also (re)registers the worker as a possible holder of in-flight deliveries, in the same round trip:
# a reclaim that ran before this worker's first heartbeat may have forgotten it.
_CLAIM_DUE = """
redis.call('SADD', KEYS[3], ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 50)
for _, item in ipairs(due) do
  if redis.call('ZREM', KEYS[1], item) == 1 then redis.call('LPUSH', KEYS[2], item) end
end
return #due
"""


# Move the in-flight deliveries of workers whose heartbeat expired back to the pending list, and forget
# those workers. A live worker's heartbeat key exists (monitor.py), so its deliveries stay where they are.
RECLAIM_INFLIGHT = """
local moved = 0
for _, owner in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. owner) == 0 then
    local inflight = ARGV[2] .. owner
    while redis.call('RPOPLPUSH', inflight, KEYS[2]) do moved = moved + 1 end
    redis.call('SREM', KEYS[1], owner)
  end
end
return moved
"""
RECLAIM_EVERY_S = 5.0


class Reclaim:
    """Every ``RECLAIM_EVERY_S``, the in-flight lists of dead workers (named in ``owners``, each list
    ``prefix`` + name) go back onto ``pending``: the webhook deliveries here, the broker outbox's entries
    in worker/relay.py."""

    def __init__(self, r: redis.Redis, owners: str, pending: str, prefix: str, what: str) -> None:
        self.script = r.register_script(RECLAIM_INFLIGHT)
        self.keys, self.prefix, self.what = [owners, pending], prefix, what
        self.last = 0.0

    def tick(self) -> None:
        if time.monotonic() - self.last <= RECLAIM_EVERY_S:
            return
        self.last = time.monotonic()
        moved = self.script(keys=self.keys, args=[keys.worker(""), self.prefix])
        if moved:
            log.warning("%s: %d held by dead workers queued again", self.what, moved)


def payload(job: Job, item: dict[str, Any]) -> dict[str, Any]:
    """What the webhook is sent for the change that queued this delivery: the job's status document
    (status, progress and message from the change; the rest from the record, plus the result when it
    succeeded), or Replicate's prediction object for a job submitted through /v1/predictions."""
    if job.webhook_format == "replicate":
        return prediction_payload(job, item)
    doc = status_document(job, (job.webhook_base or "").rstrip("/"))
    doc.update({k: item[k] for k in ("status", "progress", "message") if item.get(k) is not None})
    doc["event"] = item["event"]
    doc["seq"] = item["seq"]
    if doc["status"] != "SUCCESS":
        doc.pop("result", None)
    return doc


def prediction_payload(job: Job, item: dict[str, Any]) -> dict[str, Any]:
    """The prediction as Replicate POSTs it to a webhook: at the change's status, with the logs so far."""
    res = resources()
    at_change = dataclasses.replace(job, status=Status(item["status"]), message=item.get("message") or job.message)
    history = [v.decode() if isinstance(v, bytes) else str(v)
               for v in res.redis.lrange(keys.prediction_logs(job.id), 0, -1)]
    return prediction(load_all().get(job.type), at_change, (job.webhook_base or "").rstrip("/"), history)


class Receivers:
    """How many attempts this worker has in progress per receiver (scheme, host, port), capped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.busy: dict[str, int] = {}

    @staticmethod
    def key(url: str) -> str:
        u = httpx.URL(url)
        return f"{u.scheme}://{u.host}:{u.port or (443 if u.scheme == 'https' else 80)}"

    def take(self, key: str) -> bool:
        with self.lock:
            if self.busy.get(key, 0) >= self.limit:
                return False
            self.busy[key] = self.busy.get(key, 0) + 1
            return True

    def give_back(self, key: str) -> None:
        with self.lock:
            self.busy[key] -= 1
            if not self.busy[key]:
                del self.busy[key]


class WebhookSender(threading.Thread):
    """Takes deliveries from Redis and hands each to a bounded pool of sending threads."""

    def __init__(self, worker_name: str) -> None:
        super().__init__(name="aitasks-webhooks", daemon=True)
        settings = resources().settings
        self.worker_name = worker_name
        self.inflight = keys.webhooks_inflight(worker_name)
        self.stopping = threading.Event()
        self.slots = threading.BoundedSemaphore(settings.webhook_senders)  # a delivery is taken only for a free one
        self.pool = ThreadPoolExecutor(settings.webhook_senders, thread_name_prefix="aitasks-webhook")
        self.receivers = Receivers(settings.webhook_per_receiver)
        self.http = webhook_http.client(
            webhook_http.GuardedBackend(settings.webhook_allow_networks, _redis_endpoints(settings.resolved_redis_url())),
            settings.webhook_senders)

    def run(self) -> None:
        res = resources()
        claim = res.redis.register_script(_CLAIM_DUE)
        reclaim = Reclaim(res.redis, keys.WEBHOOKS_OWNERS, keys.WEBHOOKS_PENDING, keys.WEBHOOKS_INFLIGHT_PREFIX,
                          "webhook delivery: deliveries")
        while not self.stopping.is_set():
            if not self.slots.acquire(timeout=1):
                continue  # every sending thread busy: leave the deliveries to other workers meanwhile
            raw: Any = None  # the delivery as queued (bytes), kept to remove it from the in-flight list
            handed = False
            try:
                reclaim.tick()
                # After the reclaim, so this worker is registered before it takes anything.
                claim(keys=[keys.WEBHOOKS_RETRY, keys.WEBHOOKS_PENDING, keys.WEBHOOKS_OWNERS],
                      args=[time.time(), self.worker_name])
                raw = res.redis.brpoplpush(keys.WEBHOOKS_PENDING, self.inflight, timeout=1)
                if raw is not None:
                    handed = self.dispatch(raw)
            except redis.RedisError as exc:  # a Redis blip: the delivery goes again
                log.warning("webhook delivery: %s", exc)
                if raw is not None:
                    self.requeue(raw)
                self.stopping.wait(1)
            except Exception:  # never let a bad item kill the thread, nor loop on it
                log.exception("webhook delivery failed; dropped: %r", raw[:200] if raw else raw)
                if raw is not None:
                    self.drop(raw)
            finally:
                if not handed:
                    self.slots.release()
        self.pool.shutdown(wait=False)  # attempts in progress stay in flight: sent again if cut short

    def dispatch(self, raw: Any) -> bool:
        """Hand a delivery to a sending thread (True), or finish with it here: its job is gone, or its
        receiver already has this worker's share of attempts (put back, due in DEFER_S, not an attempt)."""
        res = resources()
        item = orjson.loads(raw)
        job = res.store.get(item["task_id"])
        if job is None or not job.webhook:
            res.redis.lrem(self.inflight, 1, raw)  # expired meanwhile: nobody to tell about it
            return False
        receiver = Receivers.key(job.webhook)
        if not self.receivers.take(receiver):
            pipe = res.redis.pipeline(transaction=True)
            pipe.zadd(keys.WEBHOOKS_RETRY, {raw: time.time() + DEFER_S})
            pipe.lrem(self.inflight, 1, raw)
            pipe.execute()
            return False
        try:
            self.pool.submit(self.send, raw, item, job, receiver)
        except RuntimeError:  # the pool is shut down: the delivery stays in flight, sent again later
            self.receivers.give_back(receiver)
            return False
        return True

    def send(self, raw: Any, item: dict[str, Any], job: Job, receiver: str) -> None:
        """One attempt, in a pool thread; then the delivery leaves the in-flight list."""
        try:
            self.deliver(item, job)
            resources().redis.lrem(self.inflight, 1, raw)
        except redis.RedisError as exc:
            log.warning("webhook delivery: %s", exc)
            self.requeue(raw)
        except Exception:
            log.exception("webhook delivery failed; dropped: %r", raw[:200])
            self.drop(raw)
        finally:
            self.receivers.give_back(receiver)
            self.slots.release()

    def drop(self, raw: Any) -> None:
        try:
            resources().redis.lrem(self.inflight, 1, raw)
        except redis.RedisError as exc:
            log.warning("webhook delivery: could not drop a delivery: %s", exc)

    def requeue(self, raw: Any) -> None:
        """Put a delivery that failed half-way (Redis blip) back in the pending list, best effort: if
        Redis is still away it stays in flight and goes back when this worker stops or dies."""
        try:
            pipe = resources().redis.pipeline(transaction=True)
            pipe.lrem(self.inflight, 1, raw)
            pipe.rpush(keys.WEBHOOKS_PENDING, raw)
            pipe.execute()
        except redis.RedisError as exc:
            log.warning("webhook delivery: could not queue a delivery again: %s", exc)

    def deliver(self, item: dict[str, Any], job: Job) -> None:
        res = resources()
        assert job.webhook
        body = orjson.dumps(payload(job, item))
        message_id = f"{job.id}:{item['seq']}:{item['event']}"  # the same on every retry of this message
        stamp = int(time.time())
        headers = {"webhook-id": message_id, "webhook-timestamp": str(stamp),
                   "webhook-signature": sign(tenant_secret(res.redis, job.tenant), message_id, stamp, body)}
        entry: dict[str, Any] = {"event": item["event"], "attempt": item["attempt"],
                                 "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        retry = False
        with webhook_span(job, item["event"], item["attempt"], Receivers.key(job.webhook)) as span:
            tracing.inject(headers)  # the receiver may join the job's trace
            try:
                status = webhook_http.post(self.http, job.webhook, body, headers, TIMEOUT_S)
                entry["status_code"] = status
                entry["delivered"] = 200 <= status < 300
                retry = status >= 500 or status == 429
            except (webhook_http.Refused, webhook_http.TooLarge) as exc:  # the receiver's doing: not retried
                entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
                entry["delivered"] = False
            except httpx.HTTPError as exc:
                entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
                entry["delivered"] = False
                retry = True
            mark_delivery(span, entry.get("status_code"), entry["delivered"], entry.get("error"))
        if retry and item["attempt"] < MAX_ATTEMPTS:
            delay = BACKOFF_S[min(item["attempt"] - 1, len(BACKOFF_S) - 1)]
            entry["retry_in_s"] = delay
            res.redis.zadd(keys.WEBHOOKS_RETRY, {orjson.dumps({**item, "attempt": item["attempt"] + 1}): time.time() + delay})
        pipe = res.redis.pipeline(transaction=True)
        pipe.rpush(keys.webhook_log(job.id), orjson.dumps(entry))
        pipe.ltrim(keys.webhook_log(job.id), -200, -1)
        pipe.expire(keys.webhook_log(job.id), job.retention_s + 600)
        # The store of record's copy (the delivery log outlives the job's Redis record): the recorder writes it.
        pipe.xadd(keys.HISTORY_STREAM, {"__webhook": orjson.dumps({**entry, "job_id": job.id, "tenant": job.tenant})},
                  maxlen=keys.HISTORY_STREAM_MAX, approximate=True)
        pipe.execute()


def _redis_endpoints(redis_url: str) -> list[tuple[IPAddress, int]]:
    """Where the service's own Redis listens: never a webhook's target."""
    parts = urlsplit(redis_url)
    if not parts.hostname:
        return []
    port = parts.port or 6379
    try:
        return [(addr, port) for addr in webhook_http.system_resolver(parts.hostname, port)]
    except OSError:
        return []


_sender: WebhookSender | None = None


@signals.worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    global _sender
    tracing.setup("worker")  # this main process's deliveries are spans too (the pool's set up their own)
    _sender = WebhookSender(sender.hostname)
    _sender.start()


@signals.worker_shutting_down.connect
def _stop(**_: Any) -> None:
    if _sender:
        _sender.stopping.set()
