"""The history export (issue 17): ``GET /api/v1/tasks/export`` and ``aitasks jobs export``, against the real
deployment of the suite (tests/stack.py) and its store of record; plus the list's filters in ``aitasks jobs``.

Rows beyond what a test can run as jobs are written into the same SQL database the deployment reads, with
the recorder's own batch write (store/records.py), so the paging is walked over several pages."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from aitasks.store import engine as engines
from aitasks.store.export import CSV_COLUMNS, PAGE_ROWS
from aitasks.store.records import Ended, write_batch
from stack import Stack, poll, submit, wait_status


def sql_url(stack: Stack) -> str:
    return stack.env().get("AITASKS_DATABASE_URL") or f"sqlite:///{stack.root / 'data' / 'aitasks.db'}"


def recorded(stack: Stack, ids: list[str]) -> bool:
    from aitasks.store.schema import jobs

    engine = engines.create(sql_url(stack))
    try:
        with engine.connect() as c:
            return len(c.execute(sa.select(jobs.c.id).where(jobs.c.id.in_(ids))).all()) == len(ids)
    finally:
        engine.dispose()


def export(client: httpx.Client, **params: Any) -> httpx.Response:
    return client.get("/api/v1/tasks/export", params=params)


def lines(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines()]


@pytest.fixture
def finished(stack: Stack, client: httpx.Client) -> list[str]:
    """Three ended jobs of the client's tenant (oldest first), recorded in SQL: SUCCESS, FAILURE, SUCCESS."""
    ids = []
    for fail in (False, True, False):
        ids.append(submit(client, parameters={"duration_s": 0.05, "steps": 1, "fail": fail}))
        time.sleep(0.01)
    for job_id in ids:
        wait_status(client, job_id)
    poll(lambda: recorded(stack, ids), "the jobs recorded in SQL", 60)
    return ids


def test_jsonl_export_streams_the_tenants_history_with_parameters_and_results(
        stack: Stack, client: httpx.Client, finished: list[str]) -> None:
    r = export(client)
    assert r.headers["content-type"].startswith("application/x-ndjson")
    assert "attachment" in r.headers["content-disposition"]
    docs = lines(r)
    assert [d["task_id"] for d in docs] == list(reversed(finished))  # newest first
    ok, failed = docs[0], docs[1]
    assert ok["status"] == "SUCCESS" and ok["input"]["parameters"]["duration_s"] == 0.05 and ok["result"] is not None
    assert failed["status"] == "FAILURE" and failed["error"] and failed["input"]["parameters"]["fail"] is True
    assert ok == {**client.get(f"/api/v1/tasks/{ok['task_id']}/status/").json(),
                  "input": ok["input"], "result": ok["result"]}  # the status document, and more
    with stack.client() as stranger:
        assert lines(export(stranger)) == []  # another tenant's history is not in it


def test_csv_export_has_a_header_and_one_row_per_job_with_the_filters(
        client: httpx.Client, finished: list[str]) -> None:
    r = export(client, format="csv", status="FAILURE")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [row[0] for row in rows[1:]] == [finished[1]]
    row = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert row["status"] == "FAILURE" and json.loads(row["input"])["parameters"]["fail"] is True
    assert [d["task_id"] for d in lines(export(client, status="SUCCESS"))] == [finished[2], finished[0]]
    assert lines(export(client, created_after="2999-01-01T00:00:00Z")) == []


def test_bad_filters_and_formats_are_400_naming_the_field(client: httpx.Client) -> None:
    for name, value in (("format", "xml"), ("status", "DONE"), ("created_after", "yesterday")):
        r = export(client, **{name: value})
        assert r.status_code == 400, r.text
        assert [f["field"] for f in r.json()["fields"]] == [name], r.json()
    assert httpx.get(f"{client.base_url}/api/v1/tasks/export").status_code == 401


def test_an_export_walks_every_page_of_a_long_history_once(stack: Stack, client: httpx.Client) -> None:
    me = _tenant(stack, client)
    now = time.time()
    count = PAGE_ROWS * 2 + 37
    records = [{"id": f"hist-{uuid.uuid4().hex}", "tenant": me, "type": "diagnostic", "status": "SUCCESS",
                "queue": "cpu", "created_at": repr(now - 86400 - i), "finished_at": repr(now - 86400 - i + 1),
                "input": "{}", "result": json.dumps({"n": i})} for i in range(count)]
    engine = engines.create(sql_url(stack))
    try:
        with engine.begin() as c:
            assert write_batch(c, [Ended(r) for r in records]) == count
    finally:
        engine.dispose()
    docs = lines(export(client, created_before=now - 3600))
    assert [d["task_id"] for d in docs] == [r["id"] for r in records]  # each once, newest first
    assert [d["result"]["n"] for d in docs[:3]] == [0, 1, 2]


def _tenant(stack: Stack, client: httpx.Client) -> str:
    job_id = submit(client, parameters={"duration_s": 0.01, "steps": 1})
    raw = stack.redis.hget(f"aitasks:job:{job_id}", "tenant")
    assert raw is not None
    wait_status(client, job_id)
    return raw.decode()


@pytest.mark.slow
def test_the_cli_lists_with_filters_and_exports_to_a_file(stack: Stack, finished: list[str], client: httpx.Client,
                                                          tmp_path: Path) -> None:
    key = client.headers["Authorization"].split()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITASKS_")}
    env.update({"AITASKS_URL": stack.url, "AITASKS_API_KEY": key, "COLUMNS": "200"})

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "aitasks.cli.main", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    listed = cli("jobs", "--status", "FAILURE")
    assert listed.returncode == 0, listed.stderr
    assert finished[1] in listed.stdout and finished[0] not in listed.stdout
    out = tmp_path / "history.csv"
    made = cli("jobs", "export", "--format", "csv", "--status", "SUCCESS", "-o", str(out))
    assert made.returncode == 0, made.stderr
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert [row[0] for row in rows[1:]] == [finished[2], finished[0]]
    streamed = cli("jobs", "export")
    assert [json.loads(line)["task_id"] for line in streamed.stdout.splitlines()] == list(reversed(finished))
    bad = cli("jobs", "export", "--created-after", "yesterday")
    assert bad.returncode == 2 and "created_after" in bad.stderr and "Traceback" not in bad.stderr
