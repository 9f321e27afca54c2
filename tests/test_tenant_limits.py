"""Per-tenant submit limits (issue 18): stored in the store of record and cached in Redis, set and shown with
the CLI, enforced on every submit path on Redis alone (429 naming the limit, with Retry-After and the
RateLimit-* headers), the tenant's queued count kept right through every way a job leaves PENDING, and
``GET /api/v1/limits`` showing only the caller's own tenant. Real Redis, API and workers."""

from __future__ import annotations

import io
import json
import math
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import sqlalchemy as sa
from alembic import command
from PIL import Image

from aitasks.client import Client, RateLimited
from aitasks.jobs import keys, limits, scripts
from aitasks.jobs.apikeys import create_key
from aitasks.jobs.models import Job, Status
from aitasks.jobs.store import JobStore
from aitasks.service.logged_process import LoggedProcess as Process
from aitasks.service.redis_server import free_port
from aitasks.settings import Settings
from aitasks.store import engine as engines
from aitasks.store import migrate, tenant_limits
from aitasks.worker import lease
from pg_server import PgServer
from stack import Stack, submit, wait_status
from store_db import BACKENDS, database_url, pg_lazy  # noqa: F401  (fixture)

TASKS = "/api/v1/tasks"


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aitasks.cli.main", *args], env=stack.env(),
                          capture_output=True, text=True, timeout=60)


def new_tenant() -> str:
    return f"lim-{uuid.uuid4().hex[:10]}"


def set_limits(stack: Stack, tenant: str, *args: str) -> None:
    out = cli(stack, "tenants", "set", tenant, *args)
    assert out.returncode == 0, out.stderr


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buf, "PNG")
    return buf.getvalue()


def queued(client: httpx.Client) -> int:
    r = client.get("/api/v1/limits")
    assert r.status_code == 200, r.text
    return int(r.json()["usage"]["queued"])


def wait_queued(client: httpx.Client, expected: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while (seen := queued(client)) != expected:
        assert time.monotonic() < deadline, f"queued stayed {seen}, expected {expected}"
        time.sleep(0.1)


# --- the store of record -----------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path, pg_lazy: Callable[[], PgServer]) -> str:  # noqa: F811
    return database_url(request.param, tmp_path, pg_lazy)


def test_migration_0005_adds_the_limits_keeping_tenants_and_they_round_trip(url: str) -> None:
    assert migrate.upgrade(url, "0004") == "0004"
    engine = engines.create(url)
    try:
        with engine.begin() as c:
            c.execute(sa.text("INSERT INTO tenants (id, created_at, history_retention_days) VALUES ('acme', 1, 9)"))
        assert migrate.upgrade(url) == migrate.head() == "0005"
        assert tenant_limits.get_limits(engine, "acme") == {name: None for name in tenant_limits.LIMITS}
        assert tenant_limits.get_limits(engine, "nobody") is None
        row = tenant_limits.set_limits(engine, "acme", {"max_queued": 5, "submits_per_s": 2.5, "weight": 3})
        assert row["max_queued"] == 5 and row["submits_per_s"] == 2.5 and row["weight"] == 3.0
        assert row["burst"] is None
        row = tenant_limits.set_limits(engine, "acme", {"burst": 7, "max_queued": None})  # others kept
        assert (row["max_queued"], row["burst"], row["submits_per_s"]) == (None, 7, 2.5)
        tenant_limits.set_limits(engine, "new-one", {"max_running": 2})  # a tenant with no row yet
        assert tenant_limits.all_limits(engine) == {"acme": {"burst": 7, "submits_per_s": 2.5, "weight": 3.0},
                                                    "new-one": {"max_running": 2}}
        with engine.connect() as c:  # the tenant's other settings untouched
            assert c.execute(sa.text("SELECT history_retention_days FROM tenants WHERE id = 'acme'")).scalar() == 9
        for bad in ({"max_queued": -1}, {"burst": 1.5}, {"weight": float("nan")}, {"nope": 1}, {"burst": "3"}):
            with pytest.raises(ValueError):
                tenant_limits.set_limits(engine, "acme", bad)
        assert tenant_limits.get_limits(engine, "acme")["burst"] == 7  # a refused set wrote nothing
        with engine.connect() as c:  # and back down: the columns go, the tenants and their retention stay
            cfg = migrate.config()
            cfg.attributes["connection"] = c
            command.downgrade(cfg, "0004")
            c.commit()
            assert migrate.current(c) == "0004"
            columns = {col["name"] for col in sa.inspect(c).get_columns("tenants")}
            assert columns == {"id", "created_at", "history_retention_days"}
            assert c.execute(sa.text("SELECT history_retention_days FROM tenants WHERE id = 'acme'")).scalar() == 9
        assert migrate.upgrade(url) == "0005"
    finally:
        engine.dispose()


# --- the queued count on Redis: every way out of PENDING -----------------------------------------------


def _create(r: redis.Redis, job_id: str, tenant: str = "acme", max_queued: str = "") -> list[Any]:
    job = Job(id=job_id, type="diagnostic", tenant=tenant, queue="cpu", created_at=time.time(), input={})
    flat = [x for pair in job.to_hash().items() for x in pair]
    created_ms = int(job.created_at * 1000)
    out = r.eval(scripts.CREATE, 7, keys.job(job_id), keys.tenant_index(tenant), "cpu", "", keys.METRICS_SUBMITTED,
                 keys.tenant_queued(tenant), keys.tenant_limits(tenant),
                 3600, created_ms, job_id, json.dumps({"headers": {"id": job_id}}), 60, "diagnostic",
                 created_ms - 3_600_000, orjson.dumps(flat), "0", max_queued)
    return list(out)  # type: ignore[arg-type]


def test_the_queued_set_follows_every_way_out_of_pending_and_never_counts_twice(r: redis.Redis) -> None:
    store = JobStore(r)
    for i in range(5):
        assert _create(r, f"j{i}") == [1, f"j{i}"]
    assert _create(r, "j0") == [0, "j0"]  # a resent create: counted once
    assert r.zcard(keys.tenant_queued("acme")) == 5
    store.update("j0", {"status": Status.PROCESSING.value})  # a worker starts it
    store.update("j1", {"status": Status.REVOKED.value})  # cancelled while queued
    store.update("j2", {"status": Status.FAILURE.value, "error_message": "orphan"})  # failed before it started
    assert r.zcard(keys.tenant_queued("acme")) == 2
    store.update("j3", {"message": "still waiting", "progress": 0})  # a change that keeps it PENDING
    assert lease.requeue(r, store, "j3", "worker gone")  # taken back before it started: still queued, once
    assert lease.requeue(r, store, "j0", "worker gone")  # taken back after it started: RETRY, not queued
    assert store.get("j0").status is Status.RETRY  # type: ignore[union-attr]
    assert sorted(r.zrange(keys.tenant_queued("acme"), 0, -1)) == ["j3", "j4"]
    store.update("j0", {"status": Status.SUCCESS.value})
    store.update("j1", {"status": Status.PENDING.value})  # refused: it had finished; nothing moves
    for job_id in ("j3", "j4"):
        store.update(job_id, {"status": Status.PROCESSING.value})
        store.update(job_id, {"status": Status.SUCCESS.value})
    assert r.zcard(keys.tenant_queued("acme")) == 0


def test_create_refuses_a_job_over_max_queued_atomically_and_the_tenants_own_value_wins(r: redis.Redis) -> None:
    assert _create(r, "a", max_queued="2")[0] == 1
    assert _create(r, "b", max_queued="2")[0] == 1
    assert _create(r, "c", max_queued="2") == [-1, "2"]
    assert not r.exists(keys.job("c")) and r.llen("cpu") == 2  # nothing written, nothing queued
    assert _create(r, "c")[0] == 1  # '' (an outbox forward): not checked
    r.hset(keys.tenant_limits("acme"), "max_queued", "10")
    assert _create(r, "d", max_queued="2")[0] == 1
    assert _create(r, "x", tenant="other", max_queued="1")[0] == 1  # per tenant
    settings = Settings(default_max_queued=4, default_submits_per_s=0, default_burst=0)
    usage = limits.peek(r, settings, "acme")
    assert (usage.queued, usage.max_queued, usage.allowed) == (4, 10, True)


def test_the_token_bucket_is_atomic_under_concurrent_takers(r: redis.Redis) -> None:
    """50 concurrent takers on a bucket of 20 refilling 0.01/s: exactly 20 pass, whatever the interleaving."""
    r.hset(keys.tenant_limits("acme"), mapping={"submits_per_s": "0.01", "burst": "20"})
    settings = Settings(default_max_queued=0)
    script_keys, args = limits.take_call(settings, "acme", 1)

    def take(_: int) -> bool:
        client = redis.Redis(connection_pool=r.connection_pool)
        return limits.Decision.parse(client.eval(limits.TAKE, len(script_keys), *script_keys, *args)).allowed  # type: ignore[arg-type]

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(take, range(50)))
    assert results.count(True) == 20
    d = limits.peek(r, settings, "acme")
    assert d.tokens < 1 and d.burst == 20 and 0 < d.full_in_s <= 2000


# --- the API -----------------------------------------------------------------------------------------


def test_over_the_rate_answers_429_with_its_headers_on_every_submit_path(stack: Stack) -> None:
    tenant = new_tenant()
    set_limits(stack, tenant, "--submits-per-s", "0.5", "--burst", "3")
    with stack.client(tenant=tenant) as client, stack.client(tenant=new_tenant()) as other:
        for _ in range(3):
            submit(client)
        r = client.post(f"{TASKS}/submit/", json={"task_type": "diagnostic"})
        assert r.status_code == 429, r.text
        body = r.json()
        assert body["code"] == "rate_limited" and body["limit"] == "submits_per_s"
        assert body["fields"] == [{"field": "submits_per_s", "message": "over 0.5 submits per second"}]
        retry = int(r.headers["Retry-After"])
        assert 1 <= retry <= 2 and 0 < body["retry_after_s"] <= 2
        assert r.headers["RateLimit-Limit"] == "3" and r.headers["RateLimit-Remaining"] == "0"
        assert 4 <= int(r.headers["RateLimit-Reset"]) <= 6  # (3 - under 1 token) / 0.5 per s
        assert r.headers["RateLimit-Policy"] == "3;w=6"
        submit(other)  # another tenant is not limited by it

        # The other submit paths take from the same bucket: multipart, seed 003's, Replicate's, documents.
        form = client.post(f"{TASKS}/submit/", data={"task_type": "diagnostic"},
                           files={"image": ("x.png", png(), "image/png")})
        seed = client.post("/api/visualizations", json={"parameters": {}})
        replicate = client.post("/v1/predictions", json={"version": "aitasks/diagnostic", "input": {}})
        document = client.post("/api/v1/documents/", files={"file": ("a.txt", b"hello", "text/plain")})
        for answer in (form, seed, replicate, document):
            assert answer.status_code == 429, (answer.request.url, answer.text)
            assert answer.json()["limit"] == "submits_per_s" and "Retry-After" in answer.headers
        assert replicate.json()["title"] == "Too many requests"

        time.sleep(retry + 0.2)
        submit(client)  # the bucket refilled as Retry-After said
        assert client.get("/api/v1/limits").json()["usage"]["submit_tokens"] < 1


def test_two_api_processes_share_one_bucket(stack: Stack, tmp_path: Path) -> None:
    """60 submits at once, spread over two API processes, against a bucket of 25 that barely refills:
    exactly 25 are accepted, whatever the interleaving (the bucket lives in Redis, taken atomically)."""
    tenant = new_tenant()
    set_limits(stack, tenant, "--submits-per-s", "0.01", "--burst", "25")
    second = Process("api-2", [sys.executable, "-m", "aitasks.cli.main", "api"],
                     {**stack.env(), "AITASKS_PORT": str(port := free_port())}, tmp_path).start()
    try:
        key = stack.new_key(tenant)
        urls = [stack.url, f"http://127.0.0.1:{port}"]
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{urls[1]}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and second.alive(), second.tail()
            time.sleep(0.2)

        def post(i: int) -> int:
            return httpx.post(f"{urls[i % 2]}{TASKS}/submit/", json={"task_type": "diagnostic"},
                              headers={"Authorization": f"Bearer {key}"}, timeout=30).status_code

        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(post, range(60)))
        assert (codes.count(202), codes.count(429)) == (25, 35), codes
        assert {codes[i] for i in range(0, 60, 2)} >= {202} and {codes[i] for i in range(1, 60, 2)} >= {202}
    finally:
        second.stop(signal.SIGTERM, 10)


def test_the_python_client_raises_rate_limited_naming_the_limit(stack: Stack) -> None:
    tenant = new_tenant()
    set_limits(stack, tenant, "--submits-per-s", "0.01", "--burst", "1")
    with Client(stack.url, api_key=stack.new_key(tenant)) as c:
        c.submit("diagnostic")
        with pytest.raises(RateLimited) as refused:
            c.submit("diagnostic")
    assert refused.value.status == 429 and refused.value.limit == "submits_per_s"
    assert refused.value.retry_after_s is not None and 90 < refused.value.retry_after_s <= 100


def test_a_document_batch_counts_each_file(stack: Stack) -> None:
    tenant = new_tenant()
    set_limits(stack, tenant, "--submits-per-s", "0.01", "--burst", "3")
    files = [("file", (f"d{i}.txt", f"text {i}".encode(), "text/plain")) for i in range(4)]
    with stack.client(tenant=tenant) as client:
        r = client.post("/api/v1/documents/batch", files=files)  # 4 files, a bucket of 3: never
        assert r.status_code == 429, r.text
        assert r.json()["retry_after_s"] is None and "Retry-After" not in r.headers
        assert "more than this tenant's burst of 3" in r.json()["error"]
        assert client.get("/api/v1/documents/").json()["documents"] == []  # nothing started
        r = client.post("/api/v1/documents/batch", files=files[:2])
        assert r.status_code == 202, r.text
        assert client.get("/api/v1/limits").json()["usage"]["submit_tokens"] == pytest.approx(1, abs=0.05)
        r = client.post("/api/v1/documents/batch", files=files[:2])
        assert r.status_code == 429 and r.json()["limit"] == "submits_per_s"


def test_no_false_429_below_the_rate(stack: Stack) -> None:
    """40 submits at 10/s against 20/s with a burst of 5: every one accepted."""
    tenant = new_tenant()
    set_limits(stack, tenant, "--submits-per-s", "20", "--burst", "5")
    with stack.client(tenant=tenant) as client:
        start = time.monotonic()
        for i in range(40):
            time.sleep(max(0.0, start + i * 0.1 - time.monotonic()))
            r = client.post(f"{TASKS}/submit/", json={"task_type": "diagnostic"})
            assert r.status_code == 202, (i, r.text)


def test_max_queued_answers_429_and_the_count_returns_to_zero(stack: Stack) -> None:
    """The cpu worker (one slot) is held by a long job, so the tenant's next jobs stay queued: at max_queued
    the next submit is refused; cancelled while queued, failed, and run to the end, each frees its place."""
    tenant = new_tenant()
    set_limits(stack, tenant, "--max-queued", "2")
    with stack.client(tenant=tenant) as client:
        blocker = submit(client, parameters={"duration_s": 60, "steps": 600})
        wait_status(client, blocker, {"PROCESSING"})
        wait_queued(client, 0)
        waiting = submit(client, parameters={"fail": True})
        cancelled = submit(client)
        assert queued(client) == 2
        r = client.post(f"{TASKS}/submit/", json={"task_type": "diagnostic"})
        assert r.status_code == 429, r.text
        assert r.json()["limit"] == "max_queued" and r.json()["fields"][0]["field"] == "max_queued"
        assert r.headers["Retry-After"] == "1" and "RateLimit-Limit" not in r.headers
        batch = client.post("/api/v1/documents/batch", files=[("file", ("a.txt", b"a", "text/plain"))])
        assert batch.status_code == 429 and batch.json()["limit"] == "max_queued"

        assert client.post(f"{TASKS}/{cancelled}/cancel/").status_code == 200  # cancelled while queued
        assert wait_status(client, cancelled)["status"] == "REVOKED"
        assert queued(client) == 1
        last = submit(client)  # its place is free again
        assert queued(client) == 2
        assert client.post(f"{TASKS}/{blocker}/cancel/").status_code == 200
        assert wait_status(client, waiting)["status"] == "FAILURE"  # started, then failed
        assert wait_status(client, last)["status"] == "SUCCESS"
        wait_queued(client, 0)
        assert stack.redis.zcard(keys.tenant_queued(tenant)) == 0


def test_a_job_whose_worker_dies_is_not_counted_again_when_it_is_queued_again(stack: Stack) -> None:
    """The job kills its worker process once after it started: queued again (RETRY, not PENDING), it runs
    to SUCCESS and the tenant's queued count is 0, with the job never counted twice."""
    tenant = new_tenant()
    set_limits(stack, tenant, "--max-queued", "1")
    with stack.client(tenant=tenant) as client:
        crashing = submit(client, parameters={"crash_times": 1})
        final = wait_status(client, crashing, timeout_s=120)
        assert final["status"] == "SUCCESS" and final["attempts"] >= 1, final
        assert queued(client) == 0
        submit(client)  # max_queued 1: its place was given back
    assert int(stack.redis.hget(keys.job(crashing), "deliveries") or 0) >= 2  # it did die once


def test_limits_show_only_the_callers_tenant(stack: Stack) -> None:
    mine, theirs = new_tenant(), new_tenant()
    set_limits(stack, mine, "--max-queued", "7", "--submits-per-s", "100", "--weight", "2")
    with stack.client(tenant=mine) as a, stack.client(tenant=theirs) as b:
        submit(a, parameters={"duration_s": 0})
        body = a.get("/api/v1/limits").json()
        assert body["tenant"] == mine
        assert body["limits"]["max_queued"] == 7 and body["limits"]["submits_per_s"] == 100
        assert body["limits"]["burst"] == 100 and body["limits"]["weight"] == 2  # burst 0: a second's worth
        assert body["own"] == ["max_queued", "submits_per_s", "weight"]
        assert body["enforced"] == ["max_running", "max_queued", "submits_per_s", "burst", "max_streams",
                                    "max_storage_mb", "weight"]
        assert 98 <= body["usage"]["submit_tokens"] <= 100
        other = b.get("/api/v1/limits").json()
        assert other["tenant"] == theirs and other["own"] == []
        assert other["limits"]["max_queued"] == 100_000 and other["limits"]["submits_per_s"] == 0
        assert other["usage"] == {"queued": 0, "running": 0, "submit_tokens": None, "bucket_full_in_s": 0,
                                  "streams": 0, "storage_bytes": 0}
        for params in ({"tenant": mine}, {"tenant_id": mine}):  # no way to name another tenant
            assert b.get("/api/v1/limits", params=params).json()["tenant"] == theirs
    assert httpx.get(f"{stack.url}/api/v1/limits").status_code == 401


def test_cli_set_and_show_round_trip_through_sql_and_redis(stack: Stack) -> None:
    tenant = new_tenant()
    out = cli(stack, "tenants", "set", tenant, "--max-running", "3", "--max-queued", "50", "--submits-per-s", "2.5",
              "--burst", "10", "--max-streams", "4", "--max-storage-mb", "200", "--weight", "1.5")
    assert out.returncode == 0, out.stderr
    shown = cli(stack, "tenants", "show", tenant)
    assert shown.returncode == 0, shown.stderr
    lines = {line.split()[0]: line.split()[1:] for line in shown.stdout.splitlines()[1:-1]}
    assert lines["max_running"][:2] == ["3", "set"] and "(not enforced yet)" not in " ".join(lines["max_running"])
    assert lines["max_queued"][:2] == ["50", "set"] and lines["submits_per_s"][:2] == ["2.5", "set"]
    assert lines["burst"][:2] == ["10", "set"] and lines["weight"][:2] == ["1.5", "set"]
    assert lines["max_streams"][0] == "4" and lines["max_storage_mb"][0] == "200"
    assert shown.stdout.splitlines()[-1] == ("usage: queued 0, running 0, submit tokens 10.0 of 10, streams open 0, "
                                             "storage 0.00 MB")
    assert "not enforced" not in " ".join(lines["max_streams"] + lines["max_storage_mb"])
    assert stack.redis.hgetall(keys.tenant_limits(tenant))[b"submits_per_s"] == b"2.5"

    out = cli(stack, "tenants", "set", tenant, "--default", "burst", "--default", "max-queued")
    assert out.returncode == 0, out.stderr
    shown = cli(stack, "tenants", "show", tenant).stdout
    assert "max_queued      100000      default" in shown and "burst           auto        default" in shown
    assert b"burst" not in stack.redis.hgetall(keys.tenant_limits(tenant))

    for args, said in ((["--max-queued", "-1"], "max_queued must be 0 or more"),
                       (["--submits-per-s", "-0.5"], "submits_per_s must be 0 or more"),
                       (["--default", "speed"], "not a tenant limit"), ([], "give at least one limit")):
        bad = cli(stack, "tenants", "set", tenant, *args)
        assert bad.returncode == 2 and said in bad.stderr, (args, bad.stderr)
    assert b"max_queued" not in stack.redis.hgetall(keys.tenant_limits(tenant))  # nothing written
    unknown = cli(stack, "tenants", "show", "never-seen")
    assert unknown.returncode == 0 and "not in the store of record" in unknown.stdout


def test_limits_come_back_after_redis_loses_its_data(make_stack: Callable[..., Stack]) -> None:
    """The store of record is the truth: a Redis that lost its data gets the limits back with the keys."""
    stack = make_stack()
    tenant = new_tenant()
    out = cli(stack, "keys", "create", "--tenant", tenant)  # in SQL too, as an operator's key is
    assert out.returncode == 0, out.stderr
    set_limits(stack, tenant, "--max-queued", "9")
    r = stack.redis
    r.flushall()  # a Redis that lost its data (this test's own)
    with stack.client(key=out.stdout.strip()) as client:
        deadline = time.monotonic() + 10
        while (answer := client.get("/api/v1/limits")).status_code == 401 and time.monotonic() < deadline:
            time.sleep(0.5)  # one refill look every 2 s per API process
        assert answer.status_code == 200, answer.text
        assert answer.json()["limits"]["max_queued"] == 9 and answer.json()["own"] == ["max_queued"]
    assert math.isclose(float(r.hget(keys.tenant_limits(tenant), "max_queued") or 0), 9)


def test_an_admin_key_sets_a_tenants_limits_over_the_api(stack: Stack) -> None:
    target = new_tenant()
    path = f"/api/v1/tenants/{target}/limits"
    admin = stack.client(key=create_key(stack.redis, new_tenant(), "ops", scope="admin"))
    with admin, stack.client(tenant=target) as own:
        r = admin.put(path, json={"max_queued": 3, "submits_per_s": 2.5, "burst": 5, "weight": 2})
        assert r.status_code == 200, r.text
        assert r.json()["tenant"] == target and r.json()["own"] == ["max_queued", "submits_per_s", "burst", "weight"]
        seen = own.get("/api/v1/limits").json()
        assert (seen["limits"]["max_queued"], seen["limits"]["submits_per_s"], seen["limits"]["burst"]) == (3, 2.5, 5)
        shown = cli(stack, "tenants", "show", target)  # written to the store of record too
        assert "max_queued      3           set for the tenant" in shown.stdout, shown.stdout

        r = admin.put(path, json={"burst": None})  # back to the default; the others stay
        assert r.status_code == 200 and r.json()["own"] == ["max_queued", "submits_per_s", "weight"]
        assert r.json()["limits"]["burst"] == 3  # the default 0: a second's worth of 2.5/s

        refused = own.put(path, json={"max_queued": 1_000_000})  # the tenant's own write key
        assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
        for body, field in (({"max_queued": -1}, "max_queued"), ({"speed": 1}, "speed"), ({"burst": 1.5}, "burst"),
                            ({}, "body")):
            bad = admin.put(path, json=body)
            assert bad.status_code == 400 and bad.json()["fields"][0]["field"] == field, (body, bad.text)
        bad_name = admin.put("/api/v1/tenants/no%20spaces/limits", json={"max_queued": 1})
        assert bad_name.status_code == 400 and bad_name.json()["fields"][0]["field"] == "tenant_id"
        assert own.get("/api/v1/limits").json()["limits"]["max_queued"] == 3  # nothing refused was written
