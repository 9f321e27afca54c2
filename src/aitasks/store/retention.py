"""History retention: ended jobs older than their tenant's retention leave the store of record, with their
artifacts, by a periodic sweep (a thread of each worker, one sweep at a time across hosts under a Redis
lock). ``AITASKS_HISTORY_RETENTION_DAYS`` is the default (0 keeps history for ever); a tenant's own value
(``aitasks tenants retention``) overrides it. Usage counters are aggregates and stay."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from aitasks.jobs import keys
from aitasks.store import engine as engines
from aitasks.store.schema import jobs, tenants, webhook_deliveries

log = logging.getLogger("aitasks.store")
DAY_S = 86400
BATCH = 2000
LOCK_KEY = f"{keys.PREFIX}:history:retention-lock"


def overrides(connection: sa.Connection) -> dict[str, int]:
    """Tenants with their own retention in days (0: for ever)."""
    rows = connection.execute(sa.select(tenants.c.id, tenants.c.history_retention_days)
                              .where(tenants.c.history_retention_days.is_not(None)))
    return {str(row.id): int(row.history_retention_days) for row in rows}


def expired_ids(connection: sa.Connection, default_days: int, now: float, limit: int) -> list[str]:
    """Up to ``limit`` ids of jobs that ended before their tenant's retention."""
    own = overrides(connection)
    ids: list[str] = []
    if default_days > 0:
        query = sa.select(jobs.c.id).where(jobs.c.finished_at < now - default_days * DAY_S)
        if own:
            query = query.where(jobs.c.tenant.not_in(sorted(own)))
        ids += connection.scalars(query.limit(limit)).all()
    for tenant, days in sorted(own.items()):
        if days > 0 and len(ids) < limit:
            ids += connection.scalars(sa.select(jobs.c.id).where(
                jobs.c.tenant == tenant, jobs.c.finished_at < now - days * DAY_S).limit(limit - len(ids))).all()
    return ids


def sweep(engine: sa.Engine, default_days: int, delete_artifacts: Callable[[str], None] | None = None,
          now: float | None = None, batch: int = BATCH) -> int:
    """Remove every expired row, a batch per transaction, and each removed job's artifacts (already gone
    when Redis's retention removed them: deleting again is a no-op). Returns how many rows were removed."""
    now = time.time() if now is None else now
    removed = 0
    while True:
        with engine.begin() as connection:
            ids = expired_ids(connection, default_days, now, batch)
            if ids:
                connection.execute(sa.delete(jobs).where(jobs.c.id.in_(ids)))
                connection.execute(sa.delete(webhook_deliveries).where(webhook_deliveries.c.job_id.in_(ids)))
        for job_id in ids:
            if delete_artifacts is not None:
                try:
                    delete_artifacts(job_id)
                except Exception as exc:  # the row is gone; a file left behind is swept with its folder
                    log.warning("history retention: artifacts of %s not removed: %s", job_id, exc)
        removed += len(ids)
        if len(ids) < batch:
            return removed


def set_tenant_retention(engine: sa.Engine, tenant: str, days: int | None) -> None:
    """A tenant's own retention in days (0: for ever), or None for the deployment's default."""
    insert = (postgresql if engine.dialect.name == "postgresql" else sqlite).insert(tenants).values(
        id=tenant, created_at=time.time(), history_retention_days=days)
    with engine.begin() as connection:
        connection.execute(insert.on_conflict_do_update(index_elements=["id"],
                                                        set_={"history_retention_days": days}))


class RetentionThread(threading.Thread):
    """Sweeps every ``every_s`` seconds; the Redis lock keeps it to one sweeper at a time."""

    def __init__(self, client: redis.Redis, database_url: str, default_days: int, every_s: float,
                 delete_artifacts: Callable[[str], None] | None = None):
        super().__init__(name="aitasks-history-retention", daemon=True)
        self.client = client
        self.database_url = database_url
        self.default_days = default_days
        self.every_s = every_s
        self.delete_artifacts = delete_artifacts
        self.stopping = threading.Event()

    def run(self) -> None:
        engine: sa.Engine | None = None
        try:
            while not self.stopping.wait(self.every_s):
                try:
                    if not self.client.set(LOCK_KEY, "1", nx=True, ex=max(60, int(self.every_s))):
                        continue  # another worker sweeps now
                    engine = engine or engines.create(self.database_url)
                    removed = sweep(engine, self.default_days, self.delete_artifacts)
                    if removed:
                        log.info("history retention: %d ended jobs past their retention removed", removed)
                except (redis.RedisError, sa.exc.SQLAlchemyError) as exc:  # tried again next round
                    log.warning("history retention: %s", str(exc).splitlines()[0] if str(exc) else exc)
        finally:
            if engine is not None:
                engine.dispose()

    def stop(self) -> None:
        self.stopping.set()
