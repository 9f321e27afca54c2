"""What one no-op job costs, in counts that do not depend on how loaded the machine is.

Wall-clock throughput on a shared 2-core machine swings by 2x between runs; the commands Redis runs per
job do not swing at all, and CPU time per job swings far less. This starts a private stack (Redis, the API,
a worker with 2 pool processes), pushes N no-op `diagnostic` jobs through it end to end (after a warm-up),
and prints per job: Redis commands by name (commands run inside Lua scripts count too), and the CPU
milliseconds of the worker (main and pool processes), the API and Redis.

    .venv/bin/python -m bench.job_cost                 # 1,000 jobs
    .venv/bin/python -m bench.job_cost --jobs 3000

To compare two revisions, run it from each one's tree (as bench/compare_revisions.py does:
``PYTHONPATH=<tree>/src:<tree>``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import redis

from bench.e2e_bench import aitasks_sustained
from bench.procs import Cleanup
from bench.stacks import AitasksStack


def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2:].split()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants (a worker's pool processes), from
    /proc (Linux)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(_stat(int(entry))[1])
            except (OSError, ValueError):
                pass
    family, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in family]
        family.update(children)
        frontier.extend(children)
    ticks = 0
    for member in family:
        try:
            fields = _stat(member)
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError):  # a pool process replaced meanwhile
            pass
    return ticks / os.sysconf("SC_CLK_TCK")


def redis_cpu_s(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def command_calls(r: redis.Redis) -> dict[str, int]:
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in r.info("commandstats").items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    cleanup = Cleanup()
    try:
        with tempfile.TemporaryDirectory(prefix="aitasks-job-cost-") as tmp:
            stack = AitasksStack("cost", Path(tmp), Path(tmp) / "logs", cleanup).start_api().start_worker(2)
            assert stack.api is not None and stack.worker is not None
            key, r = stack.new_key(), stack.redis()
            aitasks_sustained(stack, key, 200, args.connections)  # warm-up: imports, scripts, connections
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
