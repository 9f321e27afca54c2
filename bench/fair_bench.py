"""Fair dispatch (issue 18), each part next to its baseline in the same run.

1. **A small tenant behind a big backlog.** Tenant A submits ``--backlog`` jobs of 0.2 s on 2 worker slots
   (one worker, concurrency 2); while they drain, tenant B submits one job every ``--every-s`` seconds.
   Measured: B's wait (its record's started_at - created_at) against A's job time (finished_at -
   started_at), p50 and p99. Baseline: the same with AITASKS_FAIR_DISPATCH=false (one FIFO), on a backlog
   of ``--fifo-backlog`` jobs (B waits behind all of it, so a smaller one keeps the run short).
2. **Throughput through the dispatcher.** Sustained no-op jobs/s (N submitted at once, until all are
   counted finished: bench/e2e_bench.py ``aitasks_sustained``) with fair dispatch and without, the same
   worker (concurrency 2), rounds alternating; the best round of each.

    .venv/bin/python -m bench.fair_bench                       # about 3 min
    .venv/bin/python -m bench.fair_bench --backlog 200 --rounds 1   # a quick look
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.e2e_bench import aitasks_sustained
from bench.procs import Cleanup
from bench.stacks import AitasksStack
from bench.stats import summary_ms

JOB_S = 0.2


def _stack(name: str, work: Path, cleanup: Cleanup, fair: bool) -> AitasksStack:
    env = {"AITASKS_FAIR_DISPATCH": "true" if fair else "false", "AITASKS_WORKER_HEARTBEAT_S": "0.5"}
    stack = AitasksStack(name, work / name, work / "logs", cleanup, env=env)
    stack.start_api()
    stack.start_worker(2)
    return stack


def _submit(client: httpx.Client, duration_s: float) -> str:
    r = client.post("/api/v1/tasks/submit/", json={"task_type": "diagnostic",
                                                    "parameters": {"duration_s": duration_s, "steps": 1}})
    r.raise_for_status()
    return str(r.json()["task_id"])


def _times(client: httpx.Client, job_id: str) -> tuple[float, float, float] | None:
    """created_at, started_at, finished_at of an ended job (from the API: Redis lets a recorded job's record
    go after a minute, the store of record answers then), None while it runs."""
    view = client.get(f"/api/v1/tasks/{job_id}/status/").json()
    if not view.get("finished_at"):
        return None
    return tuple(datetime.fromisoformat(view[k].replace("Z", "+00:00")).timestamp()  # type: ignore[return-value]
                 for k in ("created_at", "started_at", "finished_at"))


def backlog_case(stack: AitasksStack, backlog: int, every_s: float) -> dict[str, Any]:
    headers_a = {"Authorization": f"Bearer {stack.new_key()}"}
    headers_b = {"Authorization": f"Bearer {stack.new_key()}"}
    with httpx.Client(base_url=stack.url, headers=headers_a, timeout=30) as a, \
            httpx.Client(base_url=stack.url, headers=headers_b, timeout=30) as b:
        with ThreadPoolExecutor(8) as pool:
            a_jobs = list(pool.map(lambda _: _submit(a, JOB_S), range(backlog)))
        b_jobs: list[str] = []
        t0 = time.monotonic()
        drain_s = backlog * JOB_S / 2
        while time.monotonic() - t0 < max(every_s, drain_s - 2 * every_s):  # B's jobs while A's backlog drains
            b_jobs.append(_submit(b, JOB_S))
            time.sleep(every_s)
        deadline = time.monotonic() + drain_s * 3 + 60
        ended: dict[str, tuple[float, float, float]] = {}
        for client, job_id in [*((b, j) for j in b_jobs), *((a, j) for j in a_jobs[-50:])]:  # A's last end last
            while (t := _times(client, job_id)) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {job_id} did not end in time")
                time.sleep(0.05)
            ended[job_id] = t
        for job_id in a_jobs[: min(200, backlog)]:
            t = _times(a, job_id)
            if t is not None:
                ended[job_id] = t
    b_waits = [ended[j][1] - ended[j][0] for j in b_jobs]
    a_runs = [ended[j][2] - ended[j][1] for j in a_jobs if j in ended]
    return {"backlog": backlog, "b_jobs": len(b_jobs), "b_wait": summary_ms(b_waits), "a_job_time": summary_ms(a_runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backlog", type=int, default=1000)
    parser.add_argument("--fifo-backlog", type=int, default=100)
    parser.add_argument("--every-s", type=float, default=2.0)
    parser.add_argument("--jobs", type=int, default=1000, help="Jobs a throughput round.")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cleanup = Cleanup()
    out: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="aitasks-fair-") as tmp:
            work = Path(tmp)
            fair = _stack("fair", work, cleanup, True)
            fifo = _stack("fifo", work, cleanup, False)
            out["fair_backlog"] = backlog_case(fair, args.backlog, args.every_s)
            print("fair, B behind A's backlog:", json.dumps(out["fair_backlog"]), flush=True)
            out["fifo_backlog"] = backlog_case(fifo, args.fifo_backlog, args.every_s)
            print("FIFO, B behind A's backlog:", json.dumps(out["fifo_backlog"]), flush=True)
            keys_ = {"fair": fair.new_key(), "fifo": fifo.new_key()}
            rounds: dict[str, list[dict[str, Any]]] = {"fair": [], "fifo": []}
            for _ in range(args.rounds):
                for name, stack in (("fifo", fifo), ("fair", fair)):
                    rounds[name].append(aitasks_sustained(stack, keys_[name], args.jobs, 8))
                    print(f"{name} sustained:", rounds[name][-1]["jobs_per_s"], "jobs/s", flush=True)
            best = {name: max(r["jobs_per_s"] for r in rs) for name, rs in rounds.items()}
            out["throughput"] = {"rounds": rounds, "best_jobs_per_s": best,
                                 "fair_over_fifo": round(best["fair"] / best["fifo"], 3)}
            print("throughput best:", json.dumps(best), "ratio", out["throughput"]["fair_over_fifo"], flush=True)
            print("BENCHJSON " + json.dumps(out), flush=True)
    finally:
        cleanup.run()


if __name__ == "__main__":
    main()
