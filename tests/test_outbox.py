"""Submits that survive a Redis outage (issue 20): the API's durable outbox (api/outbox.py, outbox_forwarder.py).

Real Redis, real API process, real Celery workers. Redis is stopped with SIGSTOP (it keeps its sockets and
answers nothing: the worst case, every call waits for its timeout) or SIGKILLed; the API is SIGKILLed with a
non-empty outbox. Each job's runs are counted in the diagnostic job's ledger (one line per start).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from aitasks.jobs import keys
from aitasks.processors.diagnostic import LEDGER_ENV
from aitasks.service.logged_process import LoggedProcess
from aitasks.store import engine as engines
from aitasks.store.schema import jobs
from stack import Stack, poll, wait_status
from test_files_and_unknown_outcome import ReplyHoldingProxy, proxied  # noqa: F401  (a fixture)

TASKS = "/api/v1/tasks"
QUICK = {"task_type": "diagnostic", "parameters": {"steps": 1}}


def ledger_env(root: Path, **extra: str) -> dict[str, str]:
    return {LEDGER_ENV: str(root / "ledger.jsonl"), **extra}


def starts(stack: Stack) -> Counter[str]:
    """How many times each job started, from the diagnostic ledger of every worker."""
    path = Path(stack.extra_env[LEDGER_ENV])
    lines = path.read_text().splitlines() if path.exists() else []
    return Counter(json.loads(line)["job"] for line in lines if json.loads(line)["event"] == "start")


def outbox_rows(stack: Stack) -> int:
    total = 0
    for path in (stack.root / "data" / "outbox").glob("outbox-*.sqlite3"):
        with sqlite3.connect(path) as db:
            total += db.execute("SELECT count(*) FROM submits").fetchone()[0]
    return total


@contextmanager
def redis_stopped(stack: Stack) -> Iterator[None]:
    """Redis frozen (SIGSTOP): connections open, nothing answered. Resumed (SIGCONT) on the way out."""
    proc = stack.redis_server.proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)


def post(client: httpx.Client, body: dict[str, Any] = QUICK, **headers: str) -> httpx.Response:
    return client.post(f"{TASKS}/submit/", json=body, headers=headers)


def wait_all(stack: Stack, client: httpx.Client, ids: list[str], timeout_s: float = 120) -> None:
    for task_id in ids:
        try:
            final = wait_status(client, task_id, timeout_s=timeout_s)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{stack.logs()}") from None
        assert final["status"] == "SUCCESS" and final["attempts"] == 1, final


@pytest.mark.slow
def test_submits_during_a_redis_stop_are_all_accepted_and_each_runs_once(make_stack, tmp_path: Path) -> None:
    stack = make_stack(ledger_env(tmp_path))
    with stack.client() as c, stack.client() as foreign:
        normal = post(c)  # also: the key is checked and cached, Redis has the CREATE script
        assert normal.status_code == 202, normal.text
        assert foreign.get(f"{TASKS}/").status_code == 200  # the foreign key is cached too
        uncached = stack.new_key()
        idem = f"order-{uuid.uuid4().hex}"

        with redis_stopped(stack):
            t0 = time.monotonic()

            def one(_: int) -> httpx.Response:
                return post(c)

            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(one, range(100)))
            assert [r.status_code for r in answers] == [202] * 100, [r.text for r in answers if r.status_code != 202]
            for r in answers:  # exactly the shape of a normal accepted submit
                body = r.json()
                assert set(body) == set(normal.json()) and body["status"] == "PENDING", body
                assert body["message"] == normal.json()["message"]
                assert r.headers["Location"] == body["status_url"]
            ids = [r.json()["task_id"] for r in answers]
            assert len(set(ids)) == 100

            # Status from the outbox: PENDING to its tenant, 404 to another.
            status = c.get(f"{TASKS}/{ids[-1]}/status/")
            assert status.status_code == 200 and status.json()["status"] == "PENDING", status.text
            assert c.get(f"{TASKS}/{ids[-1]}/result/").status_code == 202
            assert foreign.get(f"{TASKS}/{ids[-1]}/status/").status_code == 404

            # An Idempotency-Key resent during the outage gets the first job.
            first = post(c, **{"Idempotency-Key": idem})
            again = post(c, **{"Idempotency-Key": idem})
            assert first.status_code == 202 and again.status_code == 200, (first.text, again.text)
            assert again.json()["task_id"] == first.json()["task_id"]
            ids.append(first.json()["task_id"])

            # A key this API never saw cannot be checked while Redis is away: 503.
            with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {uncached}"}) as unknown:
                refused = post(unknown)
            assert refused.status_code == 503 and refused.headers.get("Retry-After"), refused.text

            assert outbox_rows(stack) == 101
            assert not starts(stack).keys() & set(ids)  # nothing ran in the API or anywhere meanwhile
            time.sleep(max(0.0, 12 - (time.monotonic() - t0)))  # the outage lasts about 12 s

        wait_all(stack, c, [normal.json()["task_id"], *ids])
        ran = starts(stack)
        assert all(ran[i] == 1 for i in ids), {i: ran[i] for i in ids if ran[i] != 1}
        assert poll(lambda: outbox_rows(stack) == 0, "the outbox to empty", timeout_s=10)
        # The normal submit + 101 outboxed, none twice: the tenant's jobs in the store of record.
        poll(lambda: recorded_of_tenant(stack, ids[0]) == 102, "the tenant's 102 jobs recorded", timeout_s=60)
        # The same key after the outage still names the same job.
        assert post(c, **{"Idempotency-Key": idem}).json()["task_id"] == first.json()["task_id"]


def recorded_of_tenant(stack: Stack, job_id: str) -> int:
    """How many jobs the store of record holds for the tenant of ``job_id``."""
    url = stack.env().get("AITASKS_DATABASE_URL") or f"sqlite:///{stack.root / 'data' / 'aitasks.db'}"
    engine = engines.create(url)
    try:
        with engine.connect() as c:
            tenant = c.scalar(sa.select(jobs.c.tenant).where(jobs.c.id == job_id))
            return int(c.scalar(sa.select(sa.func.count()).select_from(jobs).where(jobs.c.tenant == tenant)) or 0)
    except sa.exc.OperationalError:  # not migrated yet
        return 0
    finally:
        engine.dispose()


@pytest.mark.slow
def test_an_api_killed_with_submits_in_its_outbox_forwards_them_when_started_again(make_stack, tmp_path: Path) -> None:
    stack = make_stack(ledger_env(tmp_path))
    with stack.client() as c:
        assert post(c).status_code == 202
        with redis_stopped(stack):
            ids = [post(c).json()["task_id"] for _ in range(10)]
            assert outbox_rows(stack) == 10
            assert stack.api is not None
            stack.api.stop(signal.SIGKILL, 10)
        # Redis answers again, but the only process that had the jobs is gone: nothing forwarded them. (The
        # first one's CREATE was sent before Redis was found away, and runs on SIGCONT: outcome unknown.)
        assert not any(stack.redis.exists(keys.job(i)) for i in ids[1:])
        stack.api = LoggedProcess("api", [sys.executable, "-m", "aitasks.cli.main", "api"], stack.env(),
                                  stack.root).start()
        stack.wait_ready()
        wait_all(stack, c, ids)
        assert all(starts(stack)[i] == 1 for i in ids)
        assert outbox_rows(stack) == 0


@pytest.mark.slow
def test_a_full_outbox_refuses_with_503_and_what_it_took_runs(make_stack, tmp_path: Path) -> None:
    # About 2.5 kB a submit: an outbox of 12 kB takes a few, then refuses.
    stack = make_stack(ledger_env(tmp_path, AITASKS_OUTBOX_MAX_MB="0.012"))
    with stack.client() as c:
        assert post(c).status_code == 202
        stack.redis_server.kill()  # refused connections this time
        answers = [post(c) for _ in range(12)]
        codes = [r.status_code for r in answers]
        accepted = [r.json()["task_id"] for r in answers if r.status_code == 202]
        assert accepted and 503 in codes and codes == sorted(codes), codes  # taken until full, then refused
        full = answers[codes.index(503)]
        assert "outbox" in full.json()["error"] and full.json()["code"] == "unavailable", full.text
        assert full.headers.get("Retry-After")
        stack.redis_server.start()
        wait_all(stack, c, accepted)
        assert all(starts(stack)[i] == 1 for i in accepted)


@pytest.mark.slow
def test_a_create_whose_reply_was_lost_is_forwarded_without_doubling(
        proxied: tuple[Stack, ReplyHoldingProxy], tmp_path: Path) -> None:  # noqa: F811
    s, proxy = proxied
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    with s.client() as other:  # Redis learns the CREATE script (else the held reply would be NOSCRIPT)
        assert post(other).status_code == 202
    with s.client(tenant=tenant) as client:
        proxy.arm(keys.tenant_index(tenant).encode())  # this tenant's CREATE names its index
        r = post(client, {"task_type": "diagnostic", "parameters": {"steps": 3}})
        assert proxy.held.is_set(), "the proxy never saw the create"
        assert r.status_code == 202, r.text  # outcome unknown: taken into the outbox, not a 503
        task_id = r.json()["task_id"]
        assert s.redis.exists(keys.job(task_id))  # Redis did run it
        final = wait_status(client, task_id, timeout_s=60)
        assert final["status"] == "SUCCESS" and final["attempts"] == 1, final
        assert poll(lambda: outbox_rows(s) == 0, "the outbox to forward the job", timeout_s=20)
        assert poll(lambda: recorded_of_tenant(s, task_id) == 1, "the job recorded once", timeout_s=60)
        submitted = s.redis.hget(keys.METRICS_SUBMITTED, "diagnostic")
        assert int(submitted or 0) == 2, submitted  # one queue message for it, not two
        assert s.redis.llen("cpu") == 0
