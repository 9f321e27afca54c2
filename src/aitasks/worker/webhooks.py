"""The webhook delivery thread, one in each worker's main process (never in a job's process).

Deliveries are queued in Redis by the script that records each change (jobs/scripts.py), so a job never
waits on a receiver. This thread takes them one at a time (BRPOP: each goes to one worker of the
deployment; BRPOPLPUSH moves it into the worker's own in-flight list in the same step), reads the job's
current record and POSTs its status document, signed with the tenant's secret. A 5xx, 429, timeout or connection error is retried with exponential backoff (1, 2, 4, 8, 16 s;
at most ``MAX_ATTEMPTS`` tries) through a sorted set of due retries; any other answer ends it. Every
attempt and its outcome is appended to the job's delivery log, shown in its status document.
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
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import redis
from celery import signals

from aitasks.jobs import keys
from aitasks.jobs.models import Job, Status
from aitasks.jobs.predictions import prediction
from aitasks.jobs.status_document import status_document
from aitasks.jobs.webhooks import sign, tenant_secret
from aitasks.processors.registry import load_all
from aitasks.worker.resources import resources

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 6
BACKOFF_S = (1, 2, 4, 8, 16)
TIMEOUT_S = 10.0
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
_RECLAIM = """
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


class WebhookSender(threading.Thread):
    def __init__(self, worker_name: str) -> None:
        super().__init__(name="aitasks-webhooks", daemon=True)
        self.worker_name = worker_name
        self.inflight = keys.webhooks_inflight(worker_name)
        self.stopping = threading.Event()
        self.http = httpx.Client(timeout=TIMEOUT_S, follow_redirects=False,
                                 headers={"User-Agent": "aitasks-webhooks/1", "Content-Type": "application/json"})

    def run(self) -> None:
        res = resources()
        claim = res.redis.register_script(_CLAIM_DUE)
        reclaim = res.redis.register_script(_RECLAIM)
        last_reclaim = 0.0
        while not self.stopping.is_set():
            raw: Any = None  # the delivery as queued (bytes), kept to remove it from the in-flight list
            try:
                if time.monotonic() - last_reclaim > RECLAIM_EVERY_S:
                    last_reclaim = time.monotonic()
                    moved = reclaim(keys=[keys.WEBHOOKS_OWNERS, keys.WEBHOOKS_PENDING],
                                    args=[keys.worker(""), keys.WEBHOOKS_INFLIGHT_PREFIX])
                    if moved:
                        log.warning("webhook delivery: %d deliveries of dead workers queued again", moved)
                # After the reclaim, so this worker is registered before it takes anything.
                claim(keys=[keys.WEBHOOKS_RETRY, keys.WEBHOOKS_PENDING, keys.WEBHOOKS_OWNERS],
                      args=[time.time(), self.worker_name])
                raw = res.redis.brpoplpush(keys.WEBHOOKS_PENDING, self.inflight, timeout=1)
                if raw is not None:
                    self.deliver(orjson.loads(raw))
                    res.redis.lrem(self.inflight, 1, raw)
            except redis.RedisError as exc:  # a Redis blip: the delivery goes again
                log.warning("webhook delivery: %s", exc)
                if raw is not None:
                    self.requeue(raw)
                self.stopping.wait(1)
            except Exception:  # never let a bad item kill the thread, nor loop on it
                log.exception("webhook delivery failed; dropped: %r", raw[:200] if raw else raw)
                if raw is not None:
                    self.drop(raw)
        self.http.close()

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

    def deliver(self, item: dict[str, Any]) -> None:
        res = resources()
        job = res.store.get(item["task_id"])
        if job is None or not job.webhook:
            return  # expired meanwhile: nobody to tell about it
        body = orjson.dumps(payload(job, item))
        message_id = f"{job.id}:{item['seq']}:{item['event']}"  # the same on every retry of this message
        stamp = int(time.time())
        headers = {"webhook-id": message_id, "webhook-timestamp": str(stamp),
                   "webhook-signature": sign(tenant_secret(res.redis, job.tenant), message_id, stamp, body)}
        entry: dict[str, Any] = {"event": item["event"], "attempt": item["attempt"],
                                 "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
        retry = False
        try:
            r = self.http.post(job.webhook, content=body, headers=headers)
            entry["status_code"] = r.status_code
            entry["delivered"] = 200 <= r.status_code < 300
            retry = r.status_code >= 500 or r.status_code == 429
        except httpx.HTTPError as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"[:300]
            entry["delivered"] = False
            retry = True
        if retry and item["attempt"] < MAX_ATTEMPTS:
            delay = BACKOFF_S[min(item["attempt"] - 1, len(BACKOFF_S) - 1)]
            entry["retry_in_s"] = delay
            res.redis.zadd(keys.WEBHOOKS_RETRY, {orjson.dumps({**item, "attempt": item["attempt"] + 1}): time.time() + delay})
        pipe = res.redis.pipeline(transaction=False)
        pipe.rpush(keys.webhook_log(job.id), orjson.dumps(entry))
        pipe.ltrim(keys.webhook_log(job.id), -200, -1)
        pipe.expire(keys.webhook_log(job.id), job.retention_s + 600)
        pipe.execute()


_sender: WebhookSender | None = None


@signals.worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    global _sender
    _sender = WebhookSender(sender.hostname)
    _sender.start()


@signals.worker_shutting_down.connect
def _stop(**_: Any) -> None:
    if _sender:
        _sender.stopping.set()
