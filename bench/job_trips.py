"""Redis round trips per no-op job, by worker process: every write to Redis's socket, counted with strace.

A round trip is one request written to Redis's socket (a pipeline or a MULTI/EXEC block is one write,
answered by one read). This starts a private stack (Redis, the API, a worker with 2 pool processes),
warms it, attaches ``strace -f`` to the worker's main process and its pool processes, runs N no-op
``diagnostic`` jobs one at a time (submit, then wait for the outcome counter), and prints per job: the
writes of the worker's main process (Celery's consumer and the monitor's threads) and of the pool
processes, each with the commands it carried. A periodic write (a heartbeat, the webhook sender's poll)
shows as a fraction of a trip per job. Needs Linux and strace.

    .venv/bin/python -m bench.job_trips              # 200 jobs
    .venv/bin/python -m bench.job_trips --jobs 500 --raw   # and raw Celery's (same settings, result backend)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.e2e_bench import NOOP_JOB, OUTCOMES, SUBMIT_PATH, aitasks_sustained
from bench.image_bench import _group_pids
from bench.procs import Cleanup
from bench.stacks import AitasksStack, RawCelery

WRITE = re.compile(r'^(?:sendto|sendmsg|write)\((\d+)<TCP:\[[^\]]*->[^\]]*:(\d+)\]>, (?:\{msg_iov=\[\{iov_base=)?"(.*)')
COMMAND = re.compile(r"\*\d+\\r\\n\$\d+\\r\\n([A-Za-z|]+)")


def commands(buffer: str) -> str:
    """The command names in a written buffer (as strace printed it), e.g. 'MULTI HINCRBY HGET EXEC'."""
    return " ".join(name.upper() for name in COMMAND.findall(buffer)) or "?"


def count(trace_dir: Path, redis_port: int, roles: dict[int, str]) -> dict[str, Counter[str]]:
    """Writes to Redis by role ('main', 'pool'), keyed by the commands they carried."""
    out: dict[str, Counter[str]] = {}
    for path in trace_dir.glob("trace.*"):
        role = roles.get(int(path.suffix[1:]), "pool")
        for line in path.read_text(errors="replace").splitlines():
            m = WRITE.match(line)
            if m and int(m.group(2)) == redis_port:
                out.setdefault(role, Counter())[commands(m.group(3))] += 1
    return out


def traced(main_pid: int, trace_dir: Path) -> subprocess.Popen[bytes]:
    """strace attached to a worker's main process (its threads) and its pool processes."""
    pids = _group_pids(main_pid)
    trace_dir.mkdir()
    proc = subprocess.Popen(
        ["strace", "-f", "-ff", "-qq", "-yy", "-s", "400", "-e", "trace=sendto,sendmsg,write",
         "-o", str(trace_dir / "trace"), *[x for p in pids for x in ("-p", str(p))]], stderr=subprocess.DEVNULL)
    time.sleep(2)  # attached
    return proc


def show(title: str, jobs: int, by_role: dict[str, Counter[str]]) -> None:
    print(title)
    for role in ("main", "pool"):
        trips = by_role.get(role, Counter())
        print(f"  {role:5} {sum(trips.values()) / jobs:6.2f}")
        for cmds, n in trips.most_common():
            if n / jobs >= 0.02:
                print(f"        {n / jobs:6.2f}  {cmds[:110]}")


def raw_celery(tmp: Path, cleanup: Cleanup, jobs: int) -> None:
    """The same count for raw Celery (bench/raw_celery.py: aitasks' reliability settings, a Redis result
    backend), ``delay().get()`` one at a time."""
    raw = RawCelery(tmp, tmp / "logs", cleanup, 2)
    for _ in range(100):
        raw.noop.delay().get(timeout=30)
    roles = {int(t): "main" for t in os.listdir(f"/proc/{raw.worker.pid}/task")}
    strace = traced(raw.worker.pid, tmp / "strace-raw")
    for _ in range(jobs):
        raw.noop.delay().get(timeout=30)
    time.sleep(0.3)
    strace.send_signal(signal.SIGINT)
    strace.wait(30)
    show(f"raw Celery, {jobs} no-op tasks one at a time: round trips per task, by worker process:", jobs,
         count(tmp / "strace-raw", raw.redis_server.port, roles))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--raw", action="store_true", help="count raw Celery's too (bench/raw_celery.py)")
    args = parser.parse_args()
    if not shutil.which("strace"):
        raise SystemExit("strace is not installed")
    cleanup = Cleanup()
    try:
        with tempfile.TemporaryDirectory(prefix="aitasks-job-trips-") as tmp:
            stack = AitasksStack("trips", Path(tmp), Path(tmp) / "logs", cleanup).start_api().start_worker(2)
            assert stack.worker is not None
            key, r = stack.new_key(), stack.redis()
            aitasks_sustained(stack, key, 100, 4)  # warm-up: imports, scripts, connections
            main_pid = stack.worker.pid
            roles = {int(t): "main" for t in os.listdir(f"/proc/{main_pid}/task")}
            trace_dir = Path(tmp) / "strace"
            strace = traced(main_pid, trace_dir)
            client = httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {key}"})
            t0 = time.perf_counter()
            for _ in range(args.jobs):
                done = sum(int(v) for v in r.hvals(OUTCOMES))
                answer = client.post(SUBMIT_PATH, content=NOOP_JOB, headers={"Content-Type": "application/json"})
                answer.raise_for_status()
                while sum(int(v) for v in r.hvals(OUTCOMES)) <= done:
                    time.sleep(0.001)
            time.sleep(0.3)  # the last acknowledgement
            seconds = time.perf_counter() - t0
            strace.send_signal(signal.SIGINT)
            strace.wait(30)
            client.close()
            show(f"aitasks, {args.jobs} no-op jobs one at a time in {seconds:.1f} s (under strace: slow); Redis "
                 f"round trips (writes to its socket) per job, by worker process:", args.jobs,
                 count(trace_dir, stack.redis_server.port, roles))
            stack.stop_workers()
            if args.raw:
                raw_celery(Path(tmp), cleanup, args.jobs)
    finally:
        cleanup.run()


if __name__ == "__main__":
    main()
