"""Redis round trips per no-op job, by worker process: every write to Redis's socket, counted with strace.

A round trip is one request written to Redis's socket (a pipeline or a MULTI/EXEC block is one write,
answered by one read). This starts a private stack (Redis, the API, a worker with 2 pool processes),
warms it, attaches ``strace -f`` to the worker's main process and its pool processes, runs N no-op
``diagnostic`` jobs one at a time (submit, then wait for the outcome counter), and prints per job: the
writes of the worker's main process (Celery's consumer and the monitor's threads) and of the pool
processes, each with the commands it carried. A periodic write (a heartbeat, the webhook sender's poll)
shows as a fraction of a trip per job. Needs Linux and strace.

    .venv/bin/python -m bench.job_trips              # 200 jobs
    .venv/bin/python -m bench.job_trips --jobs 500
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
from bench.stacks import AitasksStack

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
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
            pids = _group_pids(main_pid)
            roles = {int(t): "main" for t in os.listdir(f"/proc/{main_pid}/task")}
            trace_dir = Path(tmp) / "strace"
            trace_dir.mkdir()
            strace = subprocess.Popen(
                ["strace", "-f", "-ff", "-qq", "-yy", "-s", "400", "-e", "trace=sendto,sendmsg,write",
                 "-o", str(trace_dir / "trace"), *[x for p in pids for x in ("-p", str(p))]],
                stderr=subprocess.DEVNULL)
            time.sleep(2)  # attached
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
            by_role = count(trace_dir, stack.redis_server.port, roles)
            print(f"{args.jobs} no-op jobs one at a time in {seconds:.1f} s (under strace: slow); Redis round "
                  f"trips (writes to its socket) per job, by worker process:")
            for role in ("main", "pool"):
                trips = by_role.get(role, Counter())
                print(f"  {role:5} {sum(trips.values()) / args.jobs:6.2f}")
                for cmds, n in trips.most_common():
                    if n / args.jobs >= 0.02:
                        print(f"        {n / args.jobs:6.2f}  {cmds[:110]}")
    finally:
        cleanup.run()


if __name__ == "__main__":
    main()
