"""History retention (issue 17): the sweep removes ended jobs past their tenant's retention, with their
artifacts, and nothing else; on SQLite and PostgreSQL; the worker's thread sweeps under a Redis lock; the
CLI sets a tenant's own value. Rows are written with the recorder's own batch write (store/records.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from aitasks.jobs.artifacts import ArtifactStore
from aitasks.service.redis_server import RedisServer
from aitasks.store import engine as engines
from aitasks.store import migrate
from aitasks.store.records import Ended, write_batch
from aitasks.store.retention import DAY_S, LOCK_KEY, RetentionThread, set_tenant_retention, sweep
from aitasks.store.schema import jobs, tenants, usage
from pg_server import PgServer
from stack import poll
from store_db import BACKENDS, database_url, pg_lazy  # noqa: F401  (pg_lazy is a fixture)

NOW = time.time()


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path, pg_lazy: Callable[[], PgServer]) -> str:  # noqa: F811
    url = database_url(request.param, tmp_path, pg_lazy)
    migrate.upgrade(url)
    return url


@pytest.fixture
def db(url: str) -> Iterator[sa.Engine]:
    engine = engines.create(url)
    yield engine
    engine.dispose()


def ended(tenant: str, days_ago: float) -> dict[str, str]:
    finished = NOW - days_ago * DAY_S
    return {"id": f"{tenant}-{days_ago}-{uuid.uuid4().hex[:8]}", "tenant": tenant, "type": "diagnostic",
            "status": "SUCCESS", "queue": "cpu", "created_at": repr(finished - 1), "started_at": repr(finished - 1),
            "finished_at": repr(finished), "input": "{}"}


def store(db: sa.Engine, records: list[dict[str, str]]) -> None:
    with db.begin() as c:
        assert write_batch(c, [Ended(r) for r in records]) == len(records)


def ids(db: sa.Engine) -> set[str]:
    with db.connect() as c:
        return set(c.scalars(sa.select(jobs.c.id)))


def test_rows_past_their_tenants_retention_go_with_their_artifacts(db: sa.Engine, tmp_path: Path) -> None:
    default_old, default_new = ended("acme", 31), ended("acme", 29)
    short_old, short_new = ended("brief", 2), ended("brief", 0.5)
    forever = ended("archive", 400)
    store(db, [default_old, default_new, short_old, short_new, forever])
    set_tenant_retention(db, "brief", 1)
    set_tenant_retention(db, "archive", 0)
    artifacts = ArtifactStore(tmp_path / "artifacts")
    for record in (default_old, default_new, short_old):
        artifacts.save(record["id"], "result.png", b"png")

    assert sweep(db, 30, artifacts.delete_job, now=NOW) == 2
    assert ids(db) == {default_new["id"], short_new["id"], forever["id"]}
    assert not artifacts.job_dir(default_old["id"]).exists() and not artifacts.job_dir(short_old["id"]).exists()
    assert artifacts.path(default_new["id"], "result.png").read_bytes() == b"png"
    with db.connect() as c:  # usage counters are aggregates: kept
        assert c.scalar(sa.select(sa.func.sum(usage.c.jobs))) == 5
    assert sweep(db, 30, artifacts.delete_job, now=NOW) == 0


def test_the_default_can_keep_history_for_ever_and_a_tenant_can_go_back_to_it(db: sa.Engine) -> None:
    old = ended("acme", 3650)
    store(db, [old])
    assert sweep(db, 0, now=NOW) == 0
    set_tenant_retention(db, "acme", 5)
    set_tenant_retention(db, "acme", None)
    with db.connect() as c:
        assert c.scalar(sa.select(tenants.c.history_retention_days).where(tenants.c.id == "acme")) is None
    assert sweep(db, 0, now=NOW) == 0  # the default again: for ever
    assert sweep(db, 3000, now=NOW) == 1


def test_a_long_backlog_goes_in_batches(db: sa.Engine) -> None:
    store(db, [ended("acme", 40 + i) for i in range(7)] + [ended("acme", 1)])
    assert sweep(db, 30, now=NOW, batch=3) == 7
    assert len(ids(db)) == 1


def test_the_workers_thread_sweeps_one_at_a_time(server: RedisServer, url: str, db: sa.Engine) -> None:
    r = redis.Redis.from_url(server.url)
    r.flushdb()
    store(db, [ended("acme", 45), ended("acme", 2)])
    r.set(LOCK_KEY, "1", ex=60)  # another worker holds the sweep
    thread = RetentionThread(r, url, 30, every_s=0.2)
    thread.start()
    try:
        time.sleep(1.0)
        assert len(ids(db)) == 2
        r.delete(LOCK_KEY)
        poll(lambda: len(ids(db)) == 1, "the thread's sweep", timeout_s=20)
        assert r.ttl(LOCK_KEY) > 0  # it took the lock itself
    finally:
        thread.stop()
        thread.join(5)
        r.close()


def test_the_cli_sets_a_tenants_retention(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'aitasks.db'}"
    env = {**os.environ, "AITASKS_DATABASE_URL": url, "AITASKS_DATA_DIR": str(tmp_path)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "aitasks.cli.main", "tenants", "retention", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    done = cli("--tenant", "acme", "--days", "7")
    assert done.returncode == 0 and "7 days" in done.stdout, done.stderr
    engine = engines.create(url)
    try:
        with engine.connect() as c:
            assert c.scalar(sa.select(tenants.c.history_retention_days).where(tenants.c.id == "acme")) == 7
        assert cli("--tenant", "acme", "--default").returncode == 0
        with engine.connect() as c:
            assert c.scalar(sa.select(tenants.c.history_retention_days).where(tenants.c.id == "acme")) is None
    finally:
        engine.dispose()
    assert cli("--tenant", "acme").returncode == 2
    assert cli("--tenant", "acme", "--days", "-1").returncode == 2
    assert cli("--tenant", "bad tenant!", "--days", "1").returncode == 2
