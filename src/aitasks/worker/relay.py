"""The outbox relay: with RabbitMQ as the broker (``AITASKS_BROKER_URL``), job messages reach it from here.

Accepting a job stays one atomic Redis step (jobs/create.lua; a parent's children, worker/fan_out.lua; the
callback of a chord, worker/chord_end.lua; a fenced requeue, worker/requeue.lua): the record is written
and its Celery message pushed onto ``aitasks:broker:outbox`` instead of a queue list. A job is recorded
and queued, or neither, as with Redis as the broker.

One relay thread runs in every worker's main process. It moves entries from the outbox into its own
in-flight list (RPOPLPUSH, so each entry goes to one relay), publishes each to its queue's exchange with
publisher confirms (persistent, on a quorum queue: RabbitMQ answers once the message is stored), and
removes the entry from its in-flight list only after the confirm. Nothing is lost: an entry leaves
Redis only once RabbitMQ holds it. A relay that dies (its worker killed, its host lost) leaves its
in-flight entries behind; any other relay moves them back to the outbox once that worker's heartbeat key
has expired, the same reclaim as the webhook deliveries' (worker/webhooks.py), and a relay that restarts
takes back its own. So an entry can be published twice (confirmed, then its relay died before removing
it): harmless, the run is fenced by the job's record (worker/runner.py): a copy that arrives after the
job ended is dropped, and a copy that claims a running job takes it over so only one run's outcome is
written (jobs/end_state.lua).
"""

from __future__ import annotations

import base64
import logging
import threading
from typing import Any

import orjson
import redis
from celery import signals
from kombu import Connection, Producer

from aitasks.jobs import keys
from aitasks.settings import Settings
from aitasks.jobs.broker import broker_queues
from aitasks.worker.resources import resources
from aitasks.worker.webhooks import Reclaim

log = logging.getLogger(__name__)
BATCH = 200  # outbox entries taken in one step
CONFIRM_TIMEOUT_S = 10.0  # a publish not confirmed by then fails (the connection is dropped and made again)

# Up to ARGV[1] entries from the outbox's consuming end into the relay's in-flight list, in one step; the
# relay (re)registers in the set of possible holders in the same round trip.
_TAKE = """
redis.call('SADD', KEYS[3], ARGV[2])
local taken = {}
for i = 1, tonumber(ARGV[1]) do
  local m = redis.call('RPOPLPUSH', KEYS[1], KEYS[2])
  if not m then break end
  taken[i] = m
end
return taken
"""
# Back to the outbox's consuming end, so they go first: what this relay held when it (re)connected.
_GIVE_BACK = """
local n = 0
while redis.call('RPOPLPUSH', KEYS[1], KEYS[2]) do n = n + 1 end
return n
"""


def publish_args(raw: bytes | str) -> tuple[bytes, dict[str, Any]]:
    """The body and the Producer.publish arguments of one outbox entry (kombu's Redis envelope,
    jobs/messages.py): the same task message Celery would publish on RabbitMQ itself."""
    m = orjson.loads(raw)
    props = m.get("properties", {})
    queue = props.get("delivery_info", {}).get("routing_key") or "cpu"
    return base64.b64decode(m["body"]), {
        "exchange": queue, "routing_key": queue, "headers": m.get("headers", {}),
        "content_type": m.get("content-type", "application/json"),
        "content_encoding": m.get("content-encoding", "utf-8"),
        "correlation_id": props.get("correlation_id"), "reply_to": props.get("reply_to") or None,
        "delivery_mode": 2,
    }


class Relay(threading.Thread):
    def __init__(self, worker_name: str, settings: Settings) -> None:
        super().__init__(name="aitasks-relay", daemon=True)
        self.worker_name = worker_name
        self.settings = settings
        self.inflight = keys.broker_inflight(worker_name)
        self.stopping = threading.Event()
        self.published = 0

    def run(self) -> None:
        backoff = 0.5
        while not self.stopping.is_set():
            try:
                self.serve()
                return
            except Exception as exc:  # RabbitMQ or Redis away: the entries wait in Redis; connect again
                log.warning("outbox relay: %s: %s; trying again in %.1fs", type(exc).__name__, exc, backoff)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def serve(self) -> None:
        r = resources().redis
        take = r.register_script(_TAKE)
        reclaim = Reclaim(r, keys.BROKER_RELAYS, keys.BROKER_OUTBOX, keys.BROKER_INFLIGHT_PREFIX,
                          "outbox relay: messages")
        conn = Connection(self.settings.resolved_broker_url(), heartbeat=self.settings.broker_heartbeat_s,
                          transport_options={"confirm_publish": True}, connect_timeout=5)
        with conn:
            conn.ensure_connection(max_retries=1)
            channel = conn.channel()
            for queue in broker_queues(amqp=True):
                queue(channel).declare()
            producer = Producer(channel)
            back = int(r.eval(_GIVE_BACK, 2, self.inflight, keys.BROKER_OUTBOX))
            if back:
                log.warning("outbox relay: %d messages this worker held unconfirmed go out again", back)
            while not self.stopping.is_set():
                conn.heartbeat_check()
                reclaim.tick()
                batch: list[Any] = take(keys=[keys.BROKER_OUTBOX, self.inflight, keys.BROKER_RELAYS],
                                        args=[BATCH, self.worker_name])
                if not batch:
                    one = r.brpoplpush(keys.BROKER_OUTBOX, self.inflight, timeout=1)
                    batch = [one] if one is not None else []
                self.publish(r, producer, batch)

    def publish(self, r: redis.Redis, producer: Producer, batch: list[Any]) -> None:
        """Publish with confirms; each confirmed entry leaves the in-flight list, even when a later one fails."""
        confirmed: list[Any] = []
        try:
            for raw in batch:
                try:
                    body, args = publish_args(raw)
                except (ValueError, KeyError, TypeError):
                    log.error("outbox relay: not a job message, dropped: %r", raw[:200])
                    confirmed.append(raw)
                    continue
                producer.publish(body, retry=False, timeout=CONFIRM_TIMEOUT_S, **args)
                confirmed.append(raw)
        finally:
            if confirmed:
                pipe = r.pipeline(transaction=False)
                for raw in confirmed:
                    pipe.lrem(self.inflight, -1, raw)
                pipe.execute()
                self.published += len(confirmed)


_relay: Relay | None = None


@signals.worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    global _relay
    settings = resources().settings
    if settings.amqp_broker:
        _relay = Relay(sender.hostname, settings)
        _relay.start()


@signals.worker_shutting_down.connect
def _stop(**_: Any) -> None:
    if _relay:
        _relay.stopping.set()
