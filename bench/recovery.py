"""Recovery figures of issue 20, measured on private, loopback-only deployments (bounded in time and count).

1. Redis SIGKILLed under load: ``--jobs`` short diagnostic jobs accepted (202), Redis SIGKILLed while the
   workers take them (after its append-only file had its fsync: ``appendfsync everysec`` may lose the last
   second, docs/reliability.md), restarted on its port and data folder; a run passes when every job ends
   SUCCESS within ``--within-s`` of the restart and each is counted finished once. ``--runs`` runs.
2. A worker host lost: two cpu workers; the one running a job has its main and pool processes SIGKILLed
   at once; the seconds from the kill until the job ends SUCCESS on the other worker, with the default
   ``AITASKS_LEASE_S`` (30 s; kombu's visibility timeout alone would take 960 s). ``--host-runs`` runs.
3. Submits during a Redis outage: Redis SIGSTOPped for ``--stop-s`` (30 s) while 8 clients keep
   submitting; every answer counted (202 accepted through the API's outbox, anything else refused), then
   Redis resumed and every accepted job waited for until it ends SUCCESS. ``--stop-runs`` runs.

    python -m bench.recovery [--runs 10] [--jobs 60] [--host-runs 3] [--lease-s 30] [--stop-runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import redis

from aitasks.jobs import keys
from bench.procs import Cleanup, Proc
from bench.stacks import AitasksStack

TERMINAL = {"SUCCESS", "FAILURE", "REVOKED"}


def statuses(r: redis.Redis, ids: list[str]) -> list[str]:
    pipe = r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hget(keys.job(job_id), "status")
    return [(s or b"?").decode() for s in pipe.execute()]


def wait_until(fn: Any, timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if fn():
                return True
        except (redis.RedisError, httpx.HTTPError):
            pass
        time.sleep(interval_s)
    return False


def submit(c: httpx.Client, **parameters: Any) -> str:
    r = c.post("/api/v1/tasks/submit/", json={"task_type": "diagnostic", "parameters": parameters})
    if r.status_code != 202:
        raise RuntimeError(f"submit refused: {r.status_code} {r.text}")
    return str(r.json()["task_id"])


def succeeded(r: redis.Redis) -> int:
    return int(r.hget(keys.METRICS_JOBS, "diagnostic|SUCCESS") or 0)


def redis_kill_runs(root: Path, runs: int, jobs: int, within_s: float, seed: int) -> dict[str, Any]:
    cleanup = Cleanup()
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    try:
        stack = AitasksStack("redis-kill", root / "redis-kill", root / "logs", cleanup)
        stack.start_api().start_worker(1, "cpu").start_worker(1, "gpu")
        with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.new_key()}"},
                          timeout=30) as c:
            for run in range(runs):
                before = succeeded(stack.redis())
                ids = [submit(c, duration_s=0.2, steps=2, queue=("cpu", "gpu")[i % 2]) for i in range(jobs)]
                time.sleep(1.2 + rng.uniform(0, 0.5))  # the AOF's fsync (everysec), and the workers mid-batch
                stack.redis_server.kill()
                time.sleep(rng.uniform(0.1, 0.6))
                stack.redis_server.start()
                restarted = time.monotonic()
                r = stack.redis()
                ok = wait_until(lambda: all(s == "SUCCESS" for s in statuses(r, ids)), within_s, 0.1)
                took = time.monotonic() - restarted
                final = statuses(r, ids)
                counted = succeeded(r) - before
                row = {"run": run + 1, "all_success": ok, "seconds_after_restart": round(took, 1),
                       "not_success": sum(s != "SUCCESS" for s in final), "counted_finished": counted}
                out.append(row)
                print(f"  redis kill run {run + 1}/{runs}: {'ok' if ok and counted == jobs else 'FAILED'} "
                      f"({took:.1f} s after the restart; finished counted {counted}/{jobs})", flush=True)
                r.close()
    finally:
        cleanup.run()
    passed = sum(1 for row in out if row["all_success"] and row["counted_finished"] == jobs)
    return {"runs": runs, "passed": passed, "jobs": jobs, "within_s": within_s, "rows": out}


def node_pid(r: redis.Redis, job_id: str) -> int | None:
    raw = r.hget(keys.job(job_id), "worker")
    if not raw:
        return None
    return int(raw.decode().split("@")[0].rsplit(".", 1)[1])  # `aitasks worker` names its node <queues>.<pid>@host


def host_kill_runs(root: Path, runs: int, lease_s: float, bound_s: float) -> dict[str, Any]:
    cleanup = Cleanup()
    out: list[dict[str, Any]] = []
    env = {"AITASKS_LEASE_S": f"{lease_s:g}"}
    try:
        stack = AitasksStack("host-kill", root / "host-kill", root / "logs", cleanup)
        stack.start_api()
        stack.start_worker(1, "cpu", env=env, label="-a").start_worker(1, "cpu", env=env, label="-b")
        r = stack.redis()
        with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.new_key()}"},
                          timeout=30) as c:
            for run in range(runs):
                job_id = submit(c, duration_s=5, steps=10)
                if not wait_until(lambda: r.hget(keys.job(job_id), "status") == b"PROCESSING"
                                  and int(r.hget(keys.job(job_id), "progress") or 0) > 0, 60):
                    raise RuntimeError("the job never started")
                pid = node_pid(r, job_id)
                victim: Proc = next(w for w in stack.workers if w.pid == pid)
                killed = time.monotonic()
                victim.kill_group()  # main and pool processes at once: the host is gone
                ok = wait_until(lambda: r.hget(keys.job(job_id), "status") in {s.encode() for s in TERMINAL},
                                bound_s, 0.1)
                took = time.monotonic() - killed
                status = (r.hget(keys.job(job_id), "status") or b"?").decode()
                moved = node_pid(r, job_id) != pid
                out.append({"run": run + 1, "status": status, "seconds_after_kill": round(took, 1),
                            "other_worker": moved, "ended": ok})
                print(f"  host kill run {run + 1}/{runs}: {status} on {'another' if moved else 'the same'} "
                      f"worker {took:.1f} s after the kill", flush=True)
                stack.workers.remove(victim)
                stack.start_worker(1, "cpu", env=env, label=f"-r{run}")  # two workers again for the next run
    finally:
        cleanup.run()
    secs = [row["seconds_after_kill"] for row in out if row["status"] == "SUCCESS" and row["other_worker"]]
    return {"runs": runs, "lease_s": lease_s, "success_elsewhere": len(secs),
            "max_s": max(secs) if secs else None, "within_45_s": sum(s <= 45 for s in secs), "rows": out}


def outage_runs(root: Path, runs: int, stop_s: float, clients: int = 8) -> dict[str, Any]:
    cleanup = Cleanup()
    out: list[dict[str, Any]] = []
    try:
        stack = AitasksStack("redis-stop", root / "redis-stop", root / "logs", cleanup)
        stack.start_api().start_worker(2, "cpu")
        with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {stack.new_key()}"},
                          timeout=60) as c:
            submit(c, duration_s=0.05, steps=1)  # the key is checked and cached before the outage
            for run in range(runs):
                proc = stack.redis_server.proc
                assert proc is not None
                os.kill(proc.pid, signal.SIGSTOP)
                stopped = time.monotonic()

                def client(_: int) -> tuple[list[str], int]:
                    accepted: list[str] = []
                    refused = 0
                    while time.monotonic() - stopped < stop_s:
                        r = c.post("/api/v1/tasks/submit/",
                                   json={"task_type": "diagnostic", "parameters": {"duration_s": 0.05, "steps": 1}})
                        if r.status_code == 202:
                            accepted.append(str(r.json()["task_id"]))
                        else:
                            refused += 1
                        time.sleep(0.1)
                    return accepted, refused

                try:
                    with ThreadPoolExecutor(clients) as pool:
                        answers = list(pool.map(client, range(clients)))
                finally:
                    os.kill(proc.pid, signal.SIGCONT)
                resumed = time.monotonic()
                ids = [i for accepted, _ in answers for i in accepted]
                refused = sum(n for _, n in answers)
                r = stack.redis()
                ok = wait_until(lambda: all(s == "SUCCESS" for s in statuses(r, ids)), 300, 0.2)
                took = time.monotonic() - resumed
                ran = sum(s == "SUCCESS" for s in statuses(r, ids))
                row = {"run": run + 1, "stop_s": stop_s, "submitted": len(ids) + refused, "accepted": len(ids),
                       "refused": refused, "ran": ran, "all_ran": ok, "seconds_after_resume": round(took, 1)}
                out.append(row)
                print(f"  redis stop run {run + 1}/{runs}: {len(ids)} of {len(ids) + refused} submits accepted, "
                      f"{ran} ran ({took:.1f} s after the resume)", flush=True)
                r.close()
    finally:
        cleanup.run()
    return {"runs": runs, "stop_s": stop_s, "rows": out,
            "passed": sum(1 for row in out if row["refused"] == 0 and row["ran"] == row["accepted"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10, help="Redis kill runs (default 10)")
    p.add_argument("--jobs", type=int, default=60, help="jobs accepted before each Redis kill (default 60)")
    p.add_argument("--within-s", type=float, default=60.0, help="a run passes if all end SUCCESS within this")
    p.add_argument("--host-runs", type=int, default=3, help="worker host kill runs (default 3; 0 to skip)")
    p.add_argument("--lease-s", type=float, default=30.0, help="AITASKS_LEASE_S of the host kill runs")
    p.add_argument("--stop-runs", type=int, default=1, help="Redis stop runs (default 1; 0 to skip)")
    p.add_argument("--stop-s", type=float, default=30.0, help="how long Redis is stopped (default 30 s)")
    p.add_argument("--seed", type=int, default=20)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aitasks-recovery-") as tmp:
        root = Path(tmp)
        started = time.monotonic()
        result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        if args.runs > 0:
            result["redis_kill"] = redis_kill_runs(root, args.runs, args.jobs, args.within_s, args.seed)
        if args.host_runs > 0:
            result["host_kill"] = host_kill_runs(root, args.host_runs, args.lease_s, bound_s=120)
        if args.stop_runs > 0:
            result["redis_stop"] = outage_runs(root, args.stop_runs, args.stop_s)
        result["seconds"] = round(time.monotonic() - started, 1)
    rk, hk, rs = result.get("redis_kill"), result.get("host_kill"), result.get("redis_stop")
    print()
    if rk:
        print(f"{rk['jobs']} jobs accepted, then Redis SIGKILLed and restarted: all {rk['jobs']} end SUCCESS "
              f"within {rk['within_s']:g} s of the restart (each counted once) in {rk['passed']} runs out of "
              f"{rk['runs']}; slowest {max(row['seconds_after_restart'] for row in rk['rows'])} s")
    if hk:
        print(f"a job on a SIGKILLed worker host ends SUCCESS on another worker: {hk['success_elsewhere']} of "
              f"{hk['runs']} runs, {hk['within_45_s']} within 45 s of the kill, slowest {hk['max_s']} s "
              f"(AITASKS_LEASE_S={hk['lease_s']:g})")
    if rs:
        for row in rs["rows"]:
            print(f"submits during a {rs['stop_s']:g} s Redis stop: {row['accepted']} of {row['submitted']} accepted "
                  f"({100 * row['accepted'] / max(1, row['submitted']):.0f}%), {row['ran']} of {row['accepted']} "
                  f"ran after it ({100 * row['ran'] / max(1, row['accepted']):.0f}%), the last "
                  f"{row['seconds_after_resume']} s after the resume")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)  # var/ is not in a fresh clone
        args.json.write_text(json.dumps(result, indent=2))
    ok = ((not rk or rk["passed"] == rk["runs"]) and (not hk or hk["within_45_s"] == hk["runs"])
          and (not rs or rs["passed"] == rs["runs"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
