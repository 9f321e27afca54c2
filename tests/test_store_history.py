"""Job history through a real deployment (tests/stack.py: real Redis, Celery workers, the API) with the
store of record: a finished job's status and result still answer, with the same JSON, once Redis lost
its record; the same 404 for a foreign id; the tasks list merges Redis and SQL with its filters and
their 400s; SQL stopped under load delays the history, never a job."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import sqlalchemy as sa

from aitasks.jobs import keys
from aitasks.store import engine as engines
from aitasks.store.schema import jobs
from stack import Stack, poll, submit, wait_status


def sql_url(stack: Stack) -> str:
    return stack.env().get("AITASKS_DATABASE_URL") or f"sqlite:///{stack.root / 'data' / 'aitasks.db'}"


def recorded(url: str, ids: list[str]) -> set[str]:
    engine = engines.create(url)
    try:
        with engine.connect() as c:
            return set(c.execute(sa.select(jobs.c.id).where(jobs.c.id.in_(ids))).scalars())
    except sa.exc.OperationalError:
        return set()
    finally:
        engine.dispose()


def wait_recorded(stack: Stack, ids: list[str], timeout_s: float = 90) -> None:
    poll(lambda: recorded(sql_url(stack), ids) == set(ids), f"{len(ids)} jobs recorded in SQL", timeout_s)


def forget(stack: Stack, ids: list[str]) -> None:
    """What a lost Redis or an expired record leaves: no job hash."""
    stack.redis.delete(*[keys.job(i) for i in ids])


def answers(client: httpx.Client, job_id: str) -> tuple[Any, ...]:
    status = client.get(f"/api/v1/tasks/{job_id}/status/")
    result = client.get(f"/api/v1/tasks/{job_id}/result/")
    return status.status_code, status.json(), result.status_code, result.json()


def test_status_and_result_answer_from_sql_with_the_same_json_once_redis_lost_the_record(stack: Stack) -> None:
    with stack.client() as client, stack.client() as stranger:
        ok = submit(client, parameters={"duration_s": 0.2, "steps": 2})
        failed = submit(client, parameters={"fail": True})
        for job_id in (ok, failed):
            wait_status(client, job_id)
        wait_recorded(stack, [ok, failed])
        before = {job_id: answers(client, job_id) for job_id in (ok, failed)}
        assert before[ok][0] == 200 and before[ok][1]["status"] == "SUCCESS" and before[ok][2] == 200
        assert before[failed][1]["status"] == "FAILURE" and before[failed][2] == 500
        forget(stack, [ok, failed])
        for job_id in (ok, failed):
            assert answers(client, job_id) == before[job_id]
            unknown = stranger.get(f"/api/v1/tasks/{uuid.uuid4()}/status/")
            foreign = stranger.get(f"/api/v1/tasks/{job_id}/status/")
            assert foreign.status_code == unknown.status_code == 404  # tenant isolation: never say which
            assert foreign.json()["code"] == unknown.json()["code"]
            assert stranger.get(f"/api/v1/tasks/{job_id}/result/").status_code == 404
            assert stranger.post(f"/api/v1/tasks/{job_id}/cancel/").status_code == 404
            assert client.post(f"/api/v1/tasks/{job_id}/cancel/").status_code == 400  # ended: cannot cancel
            assert job_id not in {t["task_id"] for t in stranger.get("/api/v1/tasks/").json()["tasks"]}


def _all(client: httpx.Client, limit: int, **params: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    for _ in range(50):
        r = client.get("/api/v1/tasks/", params={"limit": limit, **params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        ids += [t["task_id"] for t in r.json()["tasks"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError("the listing did not end")


def test_the_tasks_list_pages_over_redis_and_sql_with_filters(stack: Stack) -> None:
    with stack.client() as client:
        started = time.time()
        ids = []
        for i in range(6):
            ids.append(submit(client, parameters={"fail": i % 3 == 0}))
            time.sleep(0.01)  # distinct creation times: the order below is the submit order
        for job_id in ids:
            wait_status(client, job_id)
        wait_recorded(stack, ids)
        forget(stack, ids[:3])  # the three oldest only in SQL now, the others in both
        newest_first = list(reversed(ids))
        assert _all(client, 2) == newest_first  # each once, newest first, across both stores
        assert _all(client, 4) == newest_first
        failures = [ids[3], ids[0]]
        assert _all(client, 1, status="FAILURE") == failures
        assert _all(client, 50, status="SUCCESS,FAILURE", task_type="diagnostic") == newest_first
        assert _all(client, 50, task_type="image_generation") == []
        error = client.get(f"/api/v1/tasks/{ids[0]}/status/").json()["error"]
        assert _all(client, 50, q=error[:12].upper()) == failures
        assert _all(client, 50, created_after=started - 60, created_before="2999-01-01T00:00:00Z") == newest_first
        assert _all(client, 50, created_after="2999-01-01T00:00:00Z") == []
        for name, value in (("created_after", "yesterday"), ("created_before", "2026-13-45"),
                            ("status", "DONE"), ("cursor", "!!")):
            r = client.get("/api/v1/tasks/", params={name: value})
            assert r.status_code == 400, r.text
            assert [f["field"] for f in r.json()["fields"]] == [name]


@pytest.fixture
def pg_stack(tmp_path: Path) -> Iterator[tuple[Stack, Any]]:
    from pg_server import running_postgres
    from store_db import new_pg_database

    with running_postgres() as server:
        s = Stack(tmp_path / "stack", env={"AITASKS_DATABASE_URL": new_pg_database(server)})
        try:
            s.start()
            yield s, server
        finally:
            s.stop()


@pytest.mark.slow
def test_sql_stopped_under_load_delays_history_but_never_a_job(pg_stack: tuple[Stack, Any]) -> None:
    stack, server = pg_stack
    stack.wait_workers()
    with stack.client() as client:
        first = [submit(client) for _ in range(5)]
        for job_id in first:
            wait_status(client, job_id)
        wait_recorded(stack, first)
        server.stop()
        during = [submit(client, parameters={"queue": "cpu" if i % 2 else "gpu"}) for i in range(30)]
        for job_id in during:
            assert wait_status(client, job_id, timeout_s=120)["status"] == "SUCCESS"  # jobs never wait on SQL
        r = redis.Redis.from_url(stack.redis_server.url)
        assert r.xlen(keys.HISTORY_STREAM) > 0  # the history waits in Redis
        assert client.get("/api/v1/tasks/", params={"limit": 50}).status_code == 200  # live jobs still list
        ready = poll(lambda: (b := httpx.get(f"{stack.url}/readyz", timeout=10).json())["database"] == "unreachable"
                     and b, "readyz to name the database", timeout_s=30)
        assert ready["status"] == "ready" and "history is delayed" in ready["degraded"], ready  # jobs still run
        server.start()
        wait_recorded(stack, first + during, timeout_s=120)
        poll(lambda: r.xlen(keys.HISTORY_STREAM) == 0, "the stream emptied", timeout_s=60)
        assert len(_all(client, 7)) == 35
        poll(lambda: httpx.get(f"{stack.url}/readyz", timeout=10).json()["database"] == "ok", "readyz: database ok",
             timeout_s=30)
