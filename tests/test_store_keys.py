"""Tenants and API keys in the store of record (issue 17): written to SQL first, cached in Redis, and
filled into Redis again after it lost its data, so keys, history and new jobs survive a ``FLUSHALL``.

Unit part: a real Redis (private, tests/conftest.py's ``redis_server``) and SQLite or PostgreSQL. Whole part:
a real deployment (tests/stack.py: Redis, Celery workers, the API) whose Redis is flushed under it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
import sqlalchemy as sa

from aitasks.errors import ServiceUnavailable
from aitasks.jobs import keys
from aitasks.service.redis_server import RedisServer
from aitasks.jobs.apikeys import create_key, digest, first_key, list_keys, refill, revoke_key
from aitasks.store import engine as engines
from aitasks.store import migrate
from aitasks.store.schema import api_keys, tenants
from pg_server import PgServer
from stack import Stack, poll, submit, wait_status
from store_db import BACKENDS, database_url, pg_lazy  # noqa: F401  (pg_lazy is a fixture)


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path, pg_lazy: Callable[[], PgServer]) -> Iterator[sa.Engine]:  # noqa: F811
    url = database_url(request.param, tmp_path, pg_lazy)
    migrate.upgrade(url)
    engine = engines.create(url)
    yield engine
    engine.dispose()


@pytest.fixture
def r(server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(server.url)
    client.flushdb()
    yield client
    client.close()


def row(db: sa.Engine, key: str) -> sa.RowMapping | None:
    with db.connect() as c:
        return c.execute(sa.select(api_keys).where(api_keys.c.digest == digest(key))).mappings().first()


def test_a_key_is_written_to_sql_with_its_tenant_and_only_its_digest(r: redis.Redis, db: sa.Engine) -> None:
    key = create_key(r, "acme", "ci", scope="read", expires_in_s=3600, db=db)
    stored = row(db, key)
    assert stored is not None and stored["tenant"] == "acme" and stored["scope"] == "read"
    assert stored["key_id"] == key[:12] and stored["revoked_at"] is None
    assert stored["expires_at"] == pytest.approx(time.time() + 3600, abs=30)
    with db.connect() as c:
        dumped = " ".join(str(v) for m in c.execute(sa.select(api_keys)).mappings() for v in m.values())
        assert c.execute(sa.select(tenants.c.id)).scalars().all() == ["acme"]
    assert key not in dumped  # the digest only
    assert r.hget(keys.api_key(digest(key)), "tenant") == b"acme"  # and cached in Redis
    assert [k.id for k in list_keys(r, db)] == [key[:12]]


def test_revoked_in_sql_first_and_not_brought_back_by_a_refill(r: redis.Redis, db: sa.Engine) -> None:
    kept = create_key(r, "acme", "kept", db=db)
    gone = create_key(r, "acme", "gone", db=db)
    assert revoke_key(r, gone[:12], db=db) == 1
    stored = row(db, gone)
    assert stored is not None and stored["revoked_at"] is not None
    assert not r.exists(keys.api_key(digest(gone)))
    r.flushdb()
    assert refill(r, db) == 1
    assert r.exists(keys.api_key(digest(kept))) and not r.exists(keys.api_key(digest(gone)))
    assert refill(r, db) is None  # Redis holds them all now: nothing read again
    assert revoke_key(r, gone, db=db) == 0  # already revoked


def test_a_refill_copies_keys_only_redis_held_into_sql(r: redis.Redis, db: sa.Engine) -> None:
    old = create_key(r, "legacy", "made before the store of record")  # Redis only
    assert row(db, old) is None
    assert refill(r, db) == 1
    assert row(db, old) is not None
    r.flushdb()
    assert refill(r, db) == 1 and r.hget(keys.api_key(digest(old)), "tenant") == b"legacy"


def test_a_revoke_that_races_a_refill_stays_revoked(r: redis.Redis, db: sa.Engine) -> None:
    key = create_key(r, "acme", db=db)
    r.flushdb()
    # The revoke's SQL commit lands, its Redis delete does not happen before the refill writes the key back.
    with db.begin() as c:
        c.execute(sa.update(api_keys).where(api_keys.c.digest == digest(key)).values(revoked_at=time.time()))
    real_keys = refill.__globals__["key_records"].keys
    refill.__globals__["key_records"].keys = lambda engine, include_revoked=False: real_keys(engine, True)
    try:
        refill(r, db)  # reads the key as if before the commit
    finally:
        refill.__globals__["key_records"].keys = real_keys
    assert not r.exists(keys.api_key(digest(key)))


def test_first_key_is_made_once_per_tenant(r: redis.Redis, db: sa.Engine) -> None:
    assert first_key(r, "default", "make run", db=db) is not None
    r.flushdb()  # Redis lost it: SQL still says the tenant has a key
    assert first_key(r, "default", "make run", db=db) is None


def test_a_database_that_cannot_be_reached_is_a_clear_error(r: redis.Redis, tmp_path: Path) -> None:
    engine = engines.create("postgresql://nobody@127.0.0.1:1/none", connect_timeout_s=1)
    with pytest.raises(ServiceUnavailable, match="store of record"):
        create_key(r, "acme", db=engine)
    assert r.scard(keys.API_KEYS_INDEX) == 0  # nothing half-made in Redis


def test_the_cli_creates_lists_and_revokes_keys_in_sql(server: RedisServer, r: redis.Redis, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'aitasks.db'}"
    env = {"AITASKS_REDIS_URL": server.url, "AITASKS_DATABASE_URL": url, "AITASKS_DATA_DIR": str(tmp_path)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        import os
        return subprocess.run([sys.executable, "-m", "aitasks.cli.main", *args], capture_output=True, text=True,
                              env={**os.environ, **env}, timeout=60)

    made = cli("keys", "create", "--tenant", "cli-t", "--name", "laptop")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    listed = cli("keys", "list")
    assert key[:12] in listed.stdout and "LAST USED" in listed.stdout and "never" in listed.stdout
    engine = engines.create(url)
    try:
        assert row(engine, key) is not None
        assert cli("keys", "revoke", key[:12]).returncode == 0
        stored = row(engine, key)
        assert stored is not None and stored["revoked_at"] is not None
    finally:
        engine.dispose()
    assert key[:12] not in cli("keys", "list").stdout
    down = subprocess.run([sys.executable, "-m", "aitasks.cli.main", "keys", "create", "--tenant", "x"],
                          capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, **env,
                               "AITASKS_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert down.returncode == 2 and "cannot reach the store of record" in down.stderr, down.stderr


def sql_url(stack: Stack) -> str:
    return stack.env().get("AITASKS_DATABASE_URL") or f"sqlite:///{stack.root / 'data' / 'aitasks.db'}"


@pytest.mark.slow
def test_after_a_flushall_keys_history_documents_and_new_jobs_still_work(make_stack) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = make_stack({"AITASKS_AUTH_CACHE_S": "1"})
    engine = engines.create(sql_url(stack))
    try:
        tenant = f"t-{uuid.uuid4().hex[:8]}"
        key = create_key(stack.redis, tenant, "ops", db=engine)
        revoked = create_key(stack.redis, tenant, "old", db=engine)
        other = create_key(stack.redis, f"o-{uuid.uuid4().hex[:8]}", "other", db=engine)
        assert revoke_key(stack.redis, revoked, db=engine) == 1
        with stack.client(key) as c, stack.client(other) as stranger:
            done = submit(c, parameters={"duration_s": 0.1, "steps": 1})
            assert wait_status(c, done)["status"] == "SUCCESS"
            poll(lambda: _recorded(engine, done), "the job recorded in SQL", 60)
            kept = _ingested(c, "terns.txt", TERNS)
            gone = _ingested(c, "krill.txt", b"Krill are small crustaceans that swarm in the Southern Ocean.\n")
            poll(lambda: _document_rows(engine) >= 2, "the documents recorded in SQL", 60)
            assert c.delete(f"/api/v1/documents/{gone}").status_code == 200
            assert _document_rows(engine) == 1  # a deleted document leaves SQL too

            stack.redis.flushall()

            # Documents list, answer their status and search (vectors live outside Redis); the deleted one
            # does not come back.
            listed = c.get("/api/v1/documents/")
            assert listed.status_code == 200, listed.text
            assert [d["document_id"] for d in listed.json()["documents"]] == [kept]
            assert c.get(f"/api/v1/documents/{kept}/status").json()["status"] == "completed"
            assert c.get(f"/api/v1/documents/{gone}/status").status_code == 404
            hits = c.post("/api/v1/search", json={"query": "which bird migrates furthest", "top_k": 1}).json()
            assert hits["results"] and hits["results"][0]["document_id"] == kept, hits
            assert stranger.get(f"/api/v1/documents/{kept}/status").status_code == 404

            # The API had the key cached for a moment; past its auth cache, Redis is asked and refilled.
            time.sleep(1.5)
            status = c.get(f"/api/v1/tasks/{done}/status/")
            assert status.status_code == 200 and status.json()["status"] == "SUCCESS", status.text
            assert c.get(f"/api/v1/tasks/{done}/result/").status_code == 200
            listed = c.get("/api/v1/tasks/").json()
            assert done in [t["task_id"] for t in listed["tasks"]], listed
            assert stranger.get(f"/api/v1/tasks/{done}/status/").status_code == 404
            with stack.client(revoked) as gone:
                assert gone.get("/api/v1/tasks/").status_code == 401
            again = submit(c, parameters={"duration_s": 0.1, "steps": 1})
            assert wait_status(c, again, timeout_s=120)["status"] == "SUCCESS"
            poll(lambda: _recorded(engine, again), "the new job recorded (the recorder made its group again)", 60)
        # When the key was last used reaches SQL (written by the API at the latest when it stops).
        assert stack.api is not None
        stack.api.stop(signal.SIGTERM, 30)
        stored = row(engine, key)
        assert stored is not None and stored["last_used_at"] is not None
        assert stored["last_used_at"] == pytest.approx(time.time(), abs=120)
    finally:
        engine.dispose()


TERNS = (b"Arctic terns fly from the Arctic to the Antarctic and back every year, a round trip of about seventy "
         b"thousand kilometres, the longest migration of any animal.\n")


def _ingested(c: httpx.Client, name: str, data: bytes) -> str:
    r = c.post("/api/v1/documents/", files={"file": (name, data, "text/plain")})
    assert r.status_code == 202, r.text
    document_id = str(r.json()["document_id"])
    poll(lambda: c.get(f"/api/v1/documents/{document_id}/status").json()["status"] == "completed",
         f"{name} ingested", 240)
    return document_id


def _document_rows(engine: sa.Engine) -> int:
    from aitasks.store.schema import documents

    with engine.connect() as c:
        return int(c.scalar(sa.select(sa.func.count()).select_from(documents)) or 0)


def _recorded(engine: sa.Engine, job_id: str) -> bool:
    from aitasks.store.schema import jobs

    with engine.connect() as c:
        return c.execute(sa.select(jobs.c.id).where(jobs.c.id == job_id)).first() is not None
