"""What one no-op job costs, in counts that do not depend on how loaded the machine is.

Wall-clock throughput on a shared 2-core machine swings by 2x between runs; the commands Redis runs per
job do not swing at all, and CPU time per job swings far less. This starts a private stack (Redis, the API,
a worker with 2 pool processes), pushes N no-op `diagnostic` jobs through it end to end (after a warm-up),
and prints per job: Redis commands by name (commands run inside Lua scripts count too), and the CPU
milliseconds of the worker (main and pool processes), the API and Redis.

    .venv/bin/python -m bench.job_cost                 # 1,000 jobs
    .venv/bin/python -m bench.job_cost --jobs 3000
    .venv/bin/python -m bench.job_cost --raw           # CPU by process next to raw Celery's, rounds alternating

``--raw`` answers where a no-op job's CPU goes against raw Celery's (bench/raw_celery.py: the same
reliability settings, the same pool size), process by process, in the same run: on a machine whose cores
are all busy, jobs/s is CPU per job over the cores, so this split is what sustained throughput's ratio
is made of. The benchmark's own CPU counts as the client's: raw Celery's ``delay()`` and result waits,
aitasks' HTTP submits and the counter polls.

To compare two revisions, run it from each one's tree (as bench/compare_revisions.py does:
``PYTHONPATH=<tree>/src:<tree>``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import redis

from bench.e2e_bench import aitasks_sustained, raw_sustained
from bench.procs import Cleanup
from bench.stacks import AitasksStack, RawCelery


def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2:].split()


def _parents() -> dict[int, int]:
    """Every live process's parent, from /proc (Linux)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(_stat(int(entry))[1])
            except (OSError, ValueError):
                pass
    return parents


def own_cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (not its children); 0 when it is gone."""
    try:
        fields = _stat(pid)
    except (OSError, ValueError):  # a pool process replaced meanwhile
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    return sorted(p for p, parent in _parents().items() if parent == pid)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (a worker's pool processes)."""
    parents = _parents()
    family, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent and p not in family]
        family.update(kids)
        frontier.extend(kids)
    return sum(own_cpu_s(member) for member in family)


def redis_cpu_s(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def command_calls(r: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in r.info("commandstats").items()}


def split(worker_pid: int, api_pid: int | None, r: redis.Redis) -> dict[str, float]:
    """CPU seconds so far by part: Celery's consumer (the worker's main process), its pool (and, for
    aitasks, the store recorder: every child of the main process), the API, Redis and this process."""
    parts = {"consumer": own_cpu_s(worker_pid),
             "pool and recorder": sum(cpu_s(child) for child in children(worker_pid)),
             "redis": redis_cpu_s(r), "client (this process)": time.process_time()}
    if api_pid is not None:
        parts["api"] = own_cpu_s(api_pid)
    return parts


def compare_with_raw(stack: AitasksStack, key: str, raw: RawCelery, n: int, rounds: int,
                     connections: int) -> None:
    assert stack.api is not None and stack.worker is not None
    totals: dict[str, dict[str, list[float]]] = {"aitasks": {}, "raw Celery": {}}
    for i in range(rounds):
        order = [("raw Celery", None), ("aitasks", stack)] if i % 2 == 0 else [("aitasks", stack), ("raw Celery", None)]
        for name, which in order:
            if which is None:
                before = split(raw.worker.pid, None, raw.redis())
                rate = raw_sustained(raw, n)["jobs_per_s"]  # (its own clock: the settle after is not counted)
                after = split(raw.worker.pid, None, raw.redis())
            else:
                before = split(stack.worker.pid, stack.api.pid, stack.redis())
                rate = aitasks_sustained(stack, key, n, connections)["jobs_per_s"]
                after = split(stack.worker.pid, stack.api.pid, stack.redis())
            per_job = {part: 1000 * (after[part] - before[part]) / n for part in before}
            for part, ms in per_job.items():
                totals[name].setdefault(part, []).append(ms)
            totals[name].setdefault("jobs/s", []).append(rate)
            print(f"  round {i + 1}, {name}: {rate:.0f} jobs/s, CPU ms per job "
                  + ", ".join(f"{p} {v:.2f}" for p, v in per_job.items()) + f", total {sum(per_job.values()):.2f}",
                  flush=True)
    print(f"\nmedian of {rounds} rounds, CPU ms per no-op job (jobs/s depends on the load; the split much less):")
    parts = ["consumer", "pool and recorder", "redis", "api", "client (this process)"]
    print(f"  {'part':24} {'aitasks':>8} {'raw Celery':>11}")
    for part in [*parts, "total", "jobs/s"]:
        row = []
        for name in ("aitasks", "raw Celery"):
            if part == "total":
                value = sum(statistics.median(totals[name][p]) for p in parts if p in totals[name])
            else:
                value = statistics.median(totals[name][part]) if part in totals[name] else float("nan")
            row.append(value)
        print(f"  {part:24} {row[0]:8.2f} {row[1]:11.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--raw", action="store_true", help="CPU by process next to raw Celery's (see above)")
    parser.add_argument("--rounds", type=int, default=3, help="with --raw: rounds of --jobs each, alternating")
    args = parser.parse_args()
    cleanup = Cleanup()
    try:
        with tempfile.TemporaryDirectory(prefix="aitasks-job-cost-") as tmp:
            stack = AitasksStack("cost", Path(tmp), Path(tmp) / "logs", cleanup).start_api().start_worker(2)
            assert stack.api is not None and stack.worker is not None
            key, r = stack.new_key(), stack.redis()
            aitasks_sustained(stack, key, 200, args.connections)  # warm-up: imports, scripts, connections
            if args.raw:
                raw = RawCelery(Path(tmp), Path(tmp) / "logs", cleanup, 2)
                raw_sustained(raw, 200)
                compare_with_raw(stack, key, raw, args.jobs, args.rounds, args.connections)
                return
            time.sleep(1)
            calls0, worker0, api0, redis0 = (command_calls(r), cpu_s(stack.worker.pid), cpu_s(stack.api.pid),
                                             redis_cpu_s(r))
            result = aitasks_sustained(stack, key, args.jobs, args.connections)
            calls1 = command_calls(r)
            n = args.jobs
            per_job = {k: (v - calls0.get(k, 0)) / n for k, v in calls1.items()}
            print(f"{n} no-op jobs end to end: {result['jobs_per_s']} jobs/s (load-dependent), "
                  f"{result['redis_bytes_per_job']} bytes of Redis per job")
            print(f"CPU ms per job: worker {1000 * (cpu_s(stack.worker.pid) - worker0) / n:.2f}, "
                  f"API {1000 * (cpu_s(stack.api.pid) - api0) / n:.2f}, Redis {1000 * (redis_cpu_s(r) - redis0) / n:.2f}")
            print(f"Redis commands per job: {sum(per_job.values()):.1f} (info, commandstats excluded below 0.05)")
            for name, calls in sorted(per_job.items(), key=lambda kv: -kv[1]):
                if calls >= 0.05 and name not in ("info",):
                    print(f"  {name:24} {calls:6.2f}")
    finally:
        cleanup.run()


if __name__ == "__main__":
    main()
