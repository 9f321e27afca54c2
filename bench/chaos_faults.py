"""The faults of the chaos run, injected one after another on the private deployment while jobs run, and
what the ledger says about the recovery from each (when the first job started after it, and when the jobs
that were running in a killed process ran again)."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench.chaos_stack import ChaosStack, LedgerLine, read_ledger

KINDS = ("pool_kill", "worker_kill", "redis_kill", "redis_stop", "api_restart")


@dataclass
class Fault:
    kind: str
    started: float  # time.time()
    ended: float = 0.0  # the fault no longer applies: the kill's instant, Redis answering again, the API up
    detail: str = ""
    victims: list[str] = field(default_factory=list)  # jobs running in a killed process
    error: str = ""  # the injection itself failed (reported, the run goes on)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "started": self.started, "ended": self.ended, "detail": self.detail,
                "victims": self.victims, "error": self.error}


def running_on(ledger: list[LedgerLine], pids: set[int]) -> dict[int, list[str]]:
    """Jobs that started in one of ``pids`` and have not written ``done`` there (still running, or failing)."""
    open_: dict[tuple[str, int], LedgerLine] = {}
    for line in ledger:
        if line.pid not in pids:
            continue
        if line.event == "start":
            open_[(line.job, line.pid)] = line
        else:
            open_.pop((line.job, line.pid), None)
    out: dict[int, list[str]] = {}
    for job, pid in open_:
        out.setdefault(pid, []).append(job)
    return out


class Injector:
    def __init__(self, stack: ChaosStack, redis_down_s: float, stop_s: float, seed: int):
        self.stack = stack
        self.redis_down_s = redis_down_s
        self.stop_s = stop_s
        self.rng = random.Random(seed)
        self.faults: list[Fault] = []
        self._next_worker = 0

    def run(self, plan: list[str], warmup_s: float, gap_s: float, stop: threading.Event) -> None:
        """Inject ``plan`` in order: the first after ``warmup_s``, then one every ``gap_s`` after the last ended."""
        if stop.wait(warmup_s):
            return
        for kind in plan:
            fault = Fault(kind, time.time())
            try:
                getattr(self, kind)(fault)
            except Exception as exc:  # an injection that failed is reported, not hidden
                fault.error = f"{type(exc).__name__}: {exc}"
            fault.ended = fault.ended or time.time()
            self.faults.append(fault)
            print(f"  fault {kind}: {fault.detail or fault.error} ({fault.ended - fault.started:.1f} s)", flush=True)
            if stop.wait(gap_s):
                return

    def _worker(self) -> Any:
        w = self.stack.workers[self._next_worker % len(self.stack.workers)]
        self._next_worker += 1
        return w

    def pool_kill(self, fault: Fault) -> None:
        """SIGKILL one pool process, one running a job when there is one (as the OOM killer picks it)."""
        w = self._worker()
        pids = set(w.proc.children())
        if not pids:
            raise RuntimeError(f"{w.proc.name} has no pool processes")
        deadline = time.monotonic() + 10  # a busy one if one gets busy soon
        while not (busy := running_on(read_ledger(self.stack.ledger), pids)) and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = self.rng.choice(sorted(busy) or sorted(pids))
        fault.victims = busy.get(pid, [])
        os.kill(pid, signal.SIGKILL)
        fault.started = fault.ended = time.time()
        fault.detail = f"SIGKILL pool process {pid} of {w.proc.name}"

    def worker_kill(self, fault: Fault) -> None:
        """SIGKILL a worker's main process; the harness starts it again as `aitasks run` would."""
        w = self._worker()
        pids = set(w.proc.children())
        deadline = time.monotonic() + 10
        while not running_on(read_ledger(self.stack.ledger), pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        fault.victims = [j for jobs in running_on(read_ledger(self.stack.ledger), pids).values() for j in jobs]
        pid = self.stack.kill_worker_main(w)
        fault.started = fault.ended = time.time()
        fault.detail = f"SIGKILL main process {pid} of {w.proc.name} (pool {sorted(pids)} left running)"

    def redis_kill(self, fault: Fault) -> None:
        """SIGKILL redis-server, and start it again on its port from its append-only file."""
        self.stack.redis_server.kill()
        time.sleep(self.redis_down_s)
        self.stack.redis_server.start(timeout_s=60)
        fault.ended = time.time()
        fault.detail = f"SIGKILL redis-server, restarted from its AOF after {self.redis_down_s:g} s"

    def redis_stop(self, fault: Fault) -> None:
        """SIGSTOP redis-server (a hung host, a long fork): every connection hangs, then SIGCONT."""
        proc = self.stack.redis_server.proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            time.sleep(self.stop_s)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        fault.ended = time.time()
        fault.detail = f"SIGSTOP redis-server for {self.stop_s:g} s, then SIGCONT"

    def api_restart(self, fault: Fault) -> None:
        """Restart the API (SIGTERM, then a new process), as a deploy does."""
        self.stack.restart_api()
        fault.ended = time.time()
        fault.detail = "API stopped (SIGTERM) and started again"


@dataclass
class Recovery:
    kind: str
    detail: str
    duration_s: float
    first_start_s: float | None  # first job started after the fault ended
    first_done_s: float | None  # first job ran to completion after the fault ended
    victims: int
    victims_rerun_s: float | None  # every victim started again or finished (None: not all did)
    victims_not_rerun: list[str]
    refused: int = 0  # submits answered 5xx from the fault's start to 5 s after its end
    unreachable: int = 0  # submits that found no API in that time

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def recoveries(faults: list[Fault], ledger: list[LedgerLine], refused_at: list[float],
               unreachable_at: list[float]) -> list[Recovery]:
    starts = sorted(line.t for line in ledger if line.event == "start")
    dones = sorted(line.t for line in ledger if line.event == "done")
    out = []
    for f in faults:
        first_start = next((t - f.ended for t in starts if t > f.ended), None)
        first_done = next((t - f.ended for t in dones if t > f.ended), None)
        again: list[float] = []
        missing: list[str] = []
        for job in f.victims:
            # Started again, or (a pool process left running by a killed main process) finished after all.
            t = next((ln.t for ln in ledger if ln.job == job and ln.t > f.started), None)
            if t is None:
                missing.append(job)
            else:
                again.append(t - f.ended)
        out.append(Recovery(f.kind, f.detail or f.error, round(f.ended - f.started, 2),
                            None if first_start is None else round(first_start, 2),
                            None if first_done is None else round(first_done, 2), len(f.victims),
                            round(max(again), 2) if again and not missing else None, missing,
                            sum(1 for t in refused_at if f.started <= t <= f.ended + 5),
                            sum(1 for t in unreachable_at if f.started <= t <= f.ended + 5)))
    return out
