"""The recorder: ended jobs from the Redis Stream (written by ``history_end.lua`` in the job's atomic
end) into SQL. Each worker starts one as its child process (``worker_hook.py``); ``python -m
aitasks.store.recorder`` runs one on its own.

Every recorder reads through one consumer group, a batch at a time, writes the batch in one transaction
(insert-or-ignore by job id, records.py) and acknowledges and deletes the entries only after the commit.
A recorder killed between the two leaves its entries pending: another (or the next) recorder claims them
once idle for ``claim_idle_s`` (XAUTOCLAIM) and writes them again, which changes nothing. SQL being down
only stops this loop: jobs never wait on it, the entries wait in Redis.
"""

from __future__ import annotations

import logging
import contextlib
import os
import socket
import threading
import time
from typing import Any

import orjson
import redis
import sqlalchemy as sa

from aitasks.jobs import keys
from aitasks.store import engine as engines
from aitasks.store import migrate
from aitasks.store.records import Ended, delivery_row, files_until, write_batch, write_deliveries

log = logging.getLogger("aitasks.store.recorder")

Entry = tuple[str, dict[str, str] | None]  # (stream id, fields; None for an entry trimmed meanwhile)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(raw: Any) -> list[Entry]:
    out: list[Entry] = []
    for entry_id, fields in raw or []:
        out.append((_text(entry_id), {_text(k): _text(v) for k, v in fields.items()} if fields else None))
    return out


def ended(fields: dict[str, str]) -> Ended:
    """A stream entry as the job's record and its document's record (when it carries one)."""
    record = dict(fields)
    doc = record.pop("__document", None)
    document = None
    if doc:
        flat = orjson.loads(doc)
        document = dict(zip(flat[::2], flat[1::2], strict=True))
    return Ended(record, document)


class Recorder:
    def __init__(self, client: redis.Redis, database_url: str, consumer: str | None = None, batch: int = 500,
                 block_ms: int = 1000, claim_idle_s: float = 30.0, keep_s: int | None = 60, linger_s: float = 0.25,
                 parent_pid: int | None = None):
        self.r = client
        self.parent_pid = parent_pid  # a worker's child: stop once that worker is gone (see parent_gone)
        # After a batch smaller than ``batch``, wait this long before the next read: under a steady trickle of
        # ended jobs a batch then holds many, and its fixed cost (a transaction, three Redis calls, a CPU
        # taken from the workers on a small host) is paid once for them, not once per job or two.
        self.linger_s = linger_s
        self.keep_s = keep_s  # AITASKS_RECORDED_KEEP_S (see let_go); None: Redis keeps recorded jobs as before
        self.database_url = database_url
        self.consumer = consumer or f"{socket.gethostname()}.{os.getpid()}"
        self.batch = batch
        self.block_ms = block_ms
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.stopping = threading.Event()
        self.engine: sa.Engine | None = None
        self.recorded = 0  # jobs this recorder inserted (not counting ones already there)
        self._next_claim = 0.0

    def ensure_group(self) -> None:
        try:
            self.r.xgroup_create(keys.HISTORY_STREAM, keys.HISTORY_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def prepare(self) -> None:
        """The schema current (waiting for the database, logging why) and the group made."""
        migrate.upgrade_with_retry(self.database_url, stopping=self.stopping.is_set)
        self.engine = engines.create(self.database_url)
        self.ensure_group()

    def take(self) -> list[Entry]:
        """The next batch: first entries idle in a dead recorder's hands (checked every few seconds),
        then new ones (blocking up to ``block_ms``)."""
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + min(5.0, self.claim_idle_ms / 2000)
            claimed: Any = self.r.xautoclaim(keys.HISTORY_STREAM, keys.HISTORY_GROUP, self.consumer,
                                        self.claim_idle_ms, "0-0", count=self.batch)
            taken = _entries(claimed[1])
            trimmed = [_text(i) for i in claimed[2]] if len(claimed) > 2 else []
            if trimmed:  # pending but dropped by the stream's cap: nothing left to record
                log.warning("job history: %d ended jobs were dropped from the stream before they were recorded",
                            len(trimmed))
                self.r.xack(keys.HISTORY_STREAM, keys.HISTORY_GROUP, *trimmed)
            if taken:
                return taken
        raw: Any = self.r.xreadgroup(keys.HISTORY_GROUP, self.consumer, {keys.HISTORY_STREAM: ">"},
                                count=self.batch, block=self.block_ms)
        return _entries(raw[0][1]) if raw else []

    def write(self, entries: list[Entry]) -> int:
        """Commit the batch to SQL, then acknowledge and delete its entries. Returns the jobs inserted."""
        assert self.engine is not None
        batch = [ended(fields) for _, fields in entries if fields and "__webhook" not in fields]
        deliveries = [row for entry_id, fields in entries if fields and "__webhook" in fields
                      if (row := delivery_row(entry_id, fields["__webhook"])) is not None]
        with self.engine.begin() as connection:
            inserted = write_batch(connection, batch) if batch else 0
            write_deliveries(connection, deliveries)
        ids = [entry_id for entry_id, _ in entries]
        pipe = self.r.pipeline(transaction=True)
        pipe.xack(keys.HISTORY_STREAM, keys.HISTORY_GROUP, *ids)
        pipe.xdel(keys.HISTORY_STREAM, *ids)
        if self.keep_s is not None:
            for ended_job in batch:
                self.let_go(pipe, ended_job)
        pipe.execute()
        self.recorded += inserted
        return inserted

    def let_go(self, pipe: Any, ended_job: Ended) -> None:
        """Shrink Redis to what live clients need once the job is in SQL: its record stays ``keep_s`` more
        (for the clients that read it as it ends; EXPIRE ... LT never lengthens it), then every read is
        answered from SQL (api/deps.load_job); it leaves the tenant's Redis index now (the list reads SQL).
        Kept for their retention: a parent and its children (its callback and cancel read them), a job
        with a webhook (its deliveries read it) and a document's job (the document's status reads it)."""
        record = ended_job.record
        if any(record.get(name) for name in ("parent", "children", "webhook", "document")) or ended_job.document:
            return
        job_key = keys.job(record["id"])
        if record.get("artifacts", "[]") != "[]" or '"artifact"' in record.get("input", ""):
            # Its files stay for its retention, as with the record in Redis (worker/monitor.py's sweep).
            until = files_until(record.get("finished_at"), record.get("retention_s"))
            pipe.zadd(keys.JOBS_FILES_KEPT, {record["id"]: until})
        if self.keep_s:
            pipe.expire(job_key, self.keep_s, lt=True)
        else:
            pipe.delete(job_key)
        pipe.zrem(keys.tenant_index(record["tenant"]), record["id"])

    def run(self) -> None:
        """Record until ``stopping`` is set; every error is logged and waited out, never raised."""
        delay = 1.0
        while not self.stopping.is_set() and not self.parent_gone():
            try:
                if self.engine is None:
                    self.prepare()
                entries = self.take()
                while entries and not self.stopping.is_set():
                    try:
                        self.write(entries)
                        delay = 1.0
                        if len(entries) < self.batch:
                            self.stopping.wait(self.linger_s)
                        break
                    except sa.exc.OperationalError as exc:  # SQL down: keep the batch, try it again
                        log.warning("job history: the database cannot be written (%s); %d ended jobs wait in "
                                    "Redis, trying again in %.0f s", migrate._first_line(exc), len(entries), delay)
                        self.stopping.wait(delay)
                        delay = min(delay * 2, 10.0)
            except redis.RedisError as exc:
                if isinstance(exc, redis.ResponseError) and "NOGROUP" in str(exc):
                    # Redis lost its data (a FLUSHALL, a replica that missed writes): the group is made again.
                    log.warning("job history: the stream's consumer group was gone from Redis; making it again")
                    with contextlib.suppress(redis.RedisError):
                        self.ensure_group()
                        continue
                log.warning("job history: Redis: %s; trying again in %.0f s", exc, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, 10.0)
            except migrate.SchemaTooNew as exc:
                log.error("job history is off: %s", exc)
                return
            except Exception:  # a bug must not kill the thread silently: log it, go on after a pause
                log.exception("job history: recorder error")
                self.stopping.wait(delay)
                delay = min(delay * 2, 10.0)

    def parent_gone(self) -> bool:
        """The worker that started this recorder died (it is reparented): stop, leaving any batch in hand
        pending for another recorder to claim."""
        if self.parent_pid is None or os.getppid() == self.parent_pid:
            return False
        log.info("job history: worker %d is gone; its recorder stops", self.parent_pid)
        return True

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


def main(argv: list[str] | None = None) -> None:
    """Run one recorder in the foreground (AITASKS_* settings), until SIGTERM or Ctrl-C (or, with
    ``--parent``, until that process is gone)."""
    import argparse
    import signal

    from aitasks.logs import setup_logging
    from aitasks.settings import get_settings

    parser = argparse.ArgumentParser(prog="python -m aitasks.store.recorder")
    parser.add_argument("--consumer", help="its name in the consumer group; default <host>.<pid>")
    parser.add_argument("--parent", type=int, help="stop when this process (the worker) is gone")
    parser.add_argument("--log-as", default="recorder", help="the process name its log lines carry")
    parser.add_argument("--nice", type=int, default=0, help="lower its CPU priority by this much")
    args = parser.parse_args(argv)
    settings = get_settings()
    setup_logging(settings.log_level, args.log_as)
    if args.nice:
        os.nice(args.nice)
    client = redis.Redis.from_url(settings.resolved_redis_url(), socket_connect_timeout=3, socket_timeout=10,
                                  health_check_interval=15)
    recorder = Recorder(client, settings.resolved_database_url, consumer=args.consumer,
                        batch=settings.recorder_batch, claim_idle_s=settings.recorder_claim_idle_s,
                        keep_s=settings.recorded_keep_s, parent_pid=args.parent)
    signal.signal(signal.SIGTERM, lambda *_: recorder.stopping.set())
    try:
        recorder.run()
    except KeyboardInterrupt:
        pass
    finally:
        recorder.close()


if __name__ == "__main__":
    main()
