"""(b) A no-op job end to end: through the aitasks API next to raw Celery, same worker pool size.

- Round trip, one job at a time: aitasks = `POST /api/v1/tasks/submit/`, then `GET .../events` (SSE)
  on the same keep-alive connection until the `SUCCESS` message arrives; raw = `delay().get()` with a
  Redis result backend. Samples of the two alternate, so load from elsewhere hits both alike.
- Sustained: N jobs at once. aitasks: submitted over HTTP on a few keep-alive connections, finished
  when the job-outcome counter (what /metrics reports; written in the same Redis script as the
  terminal state) has counted all N. Raw: N `delay()` calls, then waiting for all N results.
- Redis memory per finished job: `INFO memory` used_memory before and after the first sustained round
  of aitasks, divided by N (records are kept for AITASKS_RETENTION_S after they finish).
"""

from __future__ import annotations

import asyncio
import http.client
import time
from pathlib import Path
from typing import Any

import orjson
from celery.result import ResultSet

from bench.httpclient import Connection, build_request
from bench.procs import Cleanup
from bench.stacks import AitasksStack, RawCelery
from bench.stats import summary_ms

SUBMIT_PATH = "/api/v1/tasks/submit/"
NOOP_JOB = orjson.dumps({"task_type": "diagnostic", "parameters": {"duration_s": 0, "steps": 1}})
TERMINAL = {b"SUCCESS", b"FAILURE", b"REVOKED"}
OUTCOMES = "aitasks:metrics:jobs"


class SseClient:
    """Submit, then follow the job's SSE stream until it ends; one keep-alive connection, stdlib only."""

    def __init__(self, port: int, key: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.post_headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        self.get_headers = {"Authorization": f"Bearer {key}", "Accept": "text/event-stream"}

    def round_trip(self) -> float:
        t0 = time.perf_counter()
        self.conn.request("POST", SUBMIT_PATH, body=NOOP_JOB, headers=self.post_headers)
        r = self.conn.getresponse()
        body = r.read()
        if r.status != 202:
            raise RuntimeError(f"submit answered {r.status}: {body[:300]!r}")
        task_id = orjson.loads(body)["task_id"]
        self.conn.request("GET", f"/api/v1/tasks/{task_id}/events", headers=self.get_headers)
        r = self.conn.getresponse()
        if r.status != 200:
            raise RuntimeError(f"events answered {r.status}: {r.read()[:300]!r}")
        status = b""
        while True:
            line = r.readline()
            if not line:
                raise RuntimeError(f"SSE stream of {task_id} ended before a terminal state")
            if line.startswith(b"data:") and b'"status":"' in line:
                status = orjson.loads(line[5:])["status"].encode()
                if status in TERMINAL:
                    break
        elapsed = time.perf_counter() - t0
        r.read()  # the rest of the stream (`event: end`), so the connection can be reused
        if status != b"SUCCESS":
            raise RuntimeError(f"job {task_id} ended {status.decode()}")
        return elapsed

    def close(self) -> None:
        self.conn.close()


def _outcomes(stack: AitasksStack) -> dict[str, int]:
    raw = stack.redis().hgetall(OUTCOMES)
    return {k.decode(): int(v) for k, v in raw.items()}


async def _submit_many(port: int, key: str, n: int, connections: int) -> tuple[int, str]:
    request = build_request("POST", "127.0.0.1", port, SUBMIT_PATH, NOOP_JOB,
                            {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    left = n
    errors = 0
    last_body = b""

    async def one() -> None:
        nonlocal left, errors, last_body
        conn = await Connection("127.0.0.1", port).open()
        try:
            while left > 0:
                left -= 1
                status, body = await conn.send(request)
                if status != 202:
                    errors += 1
                last_body = body
        finally:
            await conn.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return errors, orjson.loads(last_body)["task_id"] if last_body else ""


def aitasks_sustained(stack: AitasksStack, key: str, n: int, connections: int,
                      timeout_s: float = 180) -> dict[str, Any]:
    r = stack.redis()
    before = _outcomes(stack)
    done_before = sum(before.values())
    mem_before = int(r.info("memory")["used_memory"])
    t0 = time.perf_counter()
    errors, last_id = asyncio.run(_submit_many(stack.port, key, n, connections))
    t_submitted = time.perf_counter()
    if errors:
        raise RuntimeError(f"{errors} of {n} submits failed")
    deadline = t0 + timeout_s
    while True:
        done = sum(int(v) for v in r.hvals(OUTCOMES)) - done_before
        if done >= n:
            break
        if time.perf_counter() > deadline:
            raise RuntimeError(f"only {done} of {n} jobs finished in {timeout_s}s")
        time.sleep(0.002)
    t_done = time.perf_counter()
    after = _outcomes(stack)
    failed = {k: v - before.get(k, 0) for k, v in after.items() if not k.endswith("|SUCCESS")
              and v - before.get(k, 0)}
    # Let deliveries end and acknowledgements land, then weigh what the N finished jobs left behind.
    settle = time.perf_counter() + 10
    while time.perf_counter() < settle and (r.llen("cpu") or r.hlen("unacked")):
        time.sleep(0.05)
    time.sleep(0.5)
    mem_after = int(r.info("memory")["used_memory"])
    record = r.memory_usage(f"aitasks:job:{last_id}", samples=0) if last_id else None
    return {
        "jobs": n, "connections": connections,
        "seconds": round(t_done - t0, 3),
        "jobs_per_s": round(n / (t_done - t0), 1),
        "submit_seconds": round(t_submitted - t0, 3),
        "submits_per_s": round(n / (t_submitted - t0), 1),
        "not_success": failed,
        "redis_used_memory_before": mem_before, "redis_used_memory_after": mem_after,
        "redis_bytes_per_job": round((mem_after - mem_before) / n, 1),
        "job_record_bytes": record,
    }


def raw_sustained(raw: RawCelery, n: int, timeout_s: float = 180) -> dict[str, Any]:
    r = raw.redis()
    mem_before = int(r.info("memory")["used_memory"])
    t0 = time.perf_counter()
    results = [raw.noop.delay() for _ in range(n)]
    t_submitted = time.perf_counter()
    ResultSet(results, app=raw.app).join_native(timeout=timeout_s, propagate=True)
    t_done = time.perf_counter()
    time.sleep(0.5)  # the results stay, as Celery keeps them (result_expires: 1 day)
    mem_after = int(r.info("memory")["used_memory"])
    return {
        "jobs": n,
        "seconds": round(t_done - t0, 3),
        "jobs_per_s": round(n / (t_done - t0), 1),
        "submit_seconds": round(t_submitted - t0, 3),
        "redis_bytes_per_job": round((mem_after - mem_before) / n, 1),
    }


def run(work: Path, logs: Path, cleanup: Cleanup, *, concurrency: int, samples: int, warmup: int,
        sustained_jobs: int, sustained_rounds: int, submit_connections: int) -> dict[str, Any]:
    stack = AitasksStack("e2e", work / "e2e", logs, cleanup).start_api().start_worker(concurrency)
    raw = RawCelery(work / "e2e", logs, cleanup, concurrency)
    key = stack.new_key()
    sse = SseClient(stack.port, key)
    cleanup.push("sse client", sse.close)

    def raw_trip() -> float:
        t0 = time.perf_counter()
        raw.noop.delay().get(timeout=30)
        return time.perf_counter() - t0

    for _ in range(warmup):
        sse.round_trip()
        raw_trip()
    api_s: list[float] = []
    raw_s: list[float] = []
    for i in range(samples):
        if i % 2:  # alternate which goes first
            api_s.append(sse.round_trip())
            raw_s.append(raw_trip())
        else:
            raw_s.append(raw_trip())
            api_s.append(sse.round_trip())
    seq = {"api_sse": summary_ms(api_s), "raw_celery": summary_ms(raw_s)}
    print(f"  round trip (n={samples}): aitasks p50 {seq['api_sse']['p50_ms']:.2f} ms  "
          f"p99 {seq['api_sse']['p99_ms']:.2f} ms | raw celery p50 {seq['raw_celery']['p50_ms']:.2f} ms  "
          f"p99 {seq['raw_celery']['p99_ms']:.2f} ms", flush=True)

    rounds: dict[str, list[dict[str, Any]]] = {"api": [], "raw": []}
    for i in range(sustained_rounds):
        rw = raw_sustained(raw, sustained_jobs)
        rounds["raw"].append(rw)
        ap = aitasks_sustained(stack, key, sustained_jobs, submit_connections)
        rounds["api"].append(ap)
        print(f"  sustained round {i + 1}/{sustained_rounds} ({sustained_jobs} jobs): aitasks "
              f"{ap['jobs_per_s']:.0f} jobs/s (submits {ap['submits_per_s']:.0f}/s) | raw celery "
              f"{rw['jobs_per_s']:.0f} jobs/s", flush=True)
    first_api = rounds["api"][0]
    return {
        "worker_concurrency": concurrency,
        "worker_pool": "prefork",
        "round_trip": seq,
        "sustained": {
            "api": max(rounds["api"], key=lambda x: x["jobs_per_s"]),
            "raw": max(rounds["raw"], key=lambda x: x["jobs_per_s"]),
            "all_rounds": rounds,
        },
        "memory": {
            "jobs": sustained_jobs,
            "used_memory_before": first_api["redis_used_memory_before"],
            "used_memory_after": first_api["redis_used_memory_after"],
            "bytes_per_finished_job": first_api["redis_bytes_per_job"],
            "job_record_bytes": first_api["job_record_bytes"],
            "raw_celery_result_bytes_per_job": rounds["raw"][0]["redis_bytes_per_job"],
        },
    }
