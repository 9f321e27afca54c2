"""The chaos run: `python -m bench.chaos` (`make chaos`). Bounded in time and count, loopback only.

A private deployment (bench/chaos_stack.py: its own redis-server with its append-only file, the API, cpu
workers with several pool processes, a webhook receiver) takes ``--jobs`` diagnostic jobs from ``--clients``
concurrent clients: 10% cancelled mid-run, 5% failing permanently, 5% failing once (then succeeding), the
rest succeeding, each a short bit of work. Meanwhile bench/chaos_faults.py SIGKILLs pool processes and
worker main processes, SIGKILLs Redis and restarts it, SIGSTOPs Redis and resumes it, and restarts the API.
Then every job id the API gave is read back as a user reads it, and bench/chaos_check.py prints the table
(and writes it as JSON under var/chaos/). Exit status 1 when any job was lost, stuck, doubled or ended
wrong, 2 when the run itself could not be made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from bench.chaos_check import TERMINAL, Planned, Report, bad_jobs, build_report, judge, table
from bench.chaos_faults import KINDS, Injector, recoveries
from bench.chaos_stack import ChaosStack, read_ledger
from bench.procs import ROOT, Cleanup

TASKS = "/api/v1/tasks"
RETRYABLE = (httpx.TransportError,)  # refused, reset, timed out: the API restarting or Redis stopped


@dataclass
class Config:
    jobs: int = 5000
    clients: int = 64
    workers: int = 2
    concurrency: int = 2  # pool processes per worker
    rounds: int = 2  # each round injects every kind of fault once
    warmup_s: float = 5.0
    gap_s: float = 10.0  # between the end of a fault and the next
    stop_s: float = 30.0  # SIGSTOP of Redis
    redis_down_s: float = 1.0  # between SIGKILL of Redis and its restart
    stuck_after_s: float = 60.0
    submit_give_up_s: float = 180.0
    max_wait_s: float = 1800.0  # the whole wait for jobs to end, whatever happens
    seed: int = 20
    out: str = ""  # the JSON report; default var/chaos/<run>/report.json


def plan_jobs(cfg: Config) -> list[Planned]:
    rng = random.Random(cfg.seed)
    n_cancel, n_perm, n_trans = cfg.jobs // 10, cfg.jobs // 20, cfg.jobs // 20
    kinds = ["cancel"] * n_cancel + ["permanent"] * n_perm + ["transient"] * n_trans
    kinds += ["ok"] * (cfg.jobs - len(kinds))
    rng.shuffle(kinds)
    plans = []
    for n, kind in enumerate(kinds):
        work = round(rng.uniform(0.05, 0.5), 3)
        params: dict[str, Any] = {"duration_s": work, "steps": 2}
        if kind == "transient":
            params["fail_times"] = 1
        elif kind == "permanent":
            params["fail"] = True
        elif kind == "cancel":  # long enough to be running when the cancel lands, even through a fault
            params = {"duration_s": 60, "steps": 60}
        plans.append(Planned(n, kind, params))
    return plans


class Clients:
    """``cfg.clients`` concurrent users submitting the plan at an even pace over the fault phase."""

    def __init__(self, cfg: Config, stack: ChaosStack, key: str, run_id: str):
        self.cfg = cfg
        self.stack = stack
        self.headers = {"Authorization": f"Bearer {key}"}
        self.run_id = run_id

    async def _request(self, c: httpx.AsyncClient, method: str, path: str, give_up_s: float,
                       **kw: Any) -> httpx.Response | None:
        """The answer, retrying through 5xx and transport errors; None when it never came."""
        deadline = time.monotonic() + give_up_s
        while True:
            try:
                r = await c.request(method, path, **kw)
                if r.status_code < 500:
                    return r
            except RETRYABLE:
                pass
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.5)

    async def submit(self, c: httpx.AsyncClient, p: Planned) -> None:
        body = {"task_type": "diagnostic", "parameters": p.parameters, "webhook": self.stack.receiver.url}
        headers = {**self.headers, "Idempotency-Key": f"{self.run_id}-{p.n}"}  # a retried submit is one job
        deadline = time.monotonic() + self.cfg.submit_give_up_s
        while time.monotonic() < deadline:
            try:
                r = await c.post(f"{TASKS}/submit/", json=body, headers=headers)
            except RETRYABLE:
                p.unreachable_at.append(time.time())
            else:
                if r.status_code in (200, 201, 202):
                    p.task_id = str(r.json()["task_id"])
                    return
                if r.status_code < 500 and r.status_code != 429:
                    raise RuntimeError(f"submit refused for a reason no fault explains: {r.status_code} {r.text}")
                p.refused_at.append(time.time())
            await asyncio.sleep(0.5)

    async def cancel(self, c: httpx.AsyncClient, p: Planned) -> None:
        """Wait until the job runs (at most 60 s: then it is cancelled while queued), then cancel it."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = await self._request(c, "GET", f"{TASKS}/{p.task_id}/status/", 30, headers=self.headers)
            if r is not None and r.status_code == 200 and r.json()["status"] != "PENDING":
                break
            await asyncio.sleep(0.1)
        r = await self._request(c, "POST", f"{TASKS}/{p.task_id}/cancel/", 120, headers=self.headers)
        p.cancel_answer = "no answer" if r is None else f"{r.status_code} {r.json().get('status')}"

    async def run(self, plans: list[Planned], pace_s: float) -> None:
        queue: asyncio.Queue[Planned] = asyncio.Queue()
        for p in plans:
            queue.put_nowait(p)
        t0 = time.monotonic()

        async def client() -> None:
            async with httpx.AsyncClient(base_url=self.stack.url, timeout=10) as c:
                while not queue.empty():
                    p = queue.get_nowait()
                    await asyncio.sleep(max(0.0, t0 + p.n * pace_s - time.monotonic()))
                    await self.submit(c, p)
                    if p.task_id and p.kind == "cancel":
                        await self.cancel(c, p)

        await asyncio.gather(*(client() for _ in range(self.cfg.clients)))

    async def read_all(self, ids: list[str]) -> dict[str, tuple[dict[str, Any] | None, bool]]:
        """Each job's status document as a user reads it: (document or None for 404, readable)."""
        sem = asyncio.Semaphore(16)
        out: dict[str, tuple[dict[str, Any] | None, bool]] = {}
        async with httpx.AsyncClient(base_url=self.stack.url, timeout=10) as c:
            async def one(task_id: str) -> None:
                async with sem:
                    r = await self._request(c, "GET", f"{TASKS}/{task_id}/status/", 30, headers=self.headers)
                out[task_id] = ((r.json() if r.status_code == 200 else None), r.status_code in (200, 404)) \
                    if r is not None else (None, False)

            await asyncio.gather(*(one(i) for i in ids))
        return out

    async def finished_metric(self) -> int | None:
        async with httpx.AsyncClient(base_url=self.stack.url, timeout=10) as c:
            r = await self._request(c, "GET", "/metrics", 30)
        if r is None or r.status_code != 200:
            return None
        prefix = 'aitasks_jobs_finished_total{task_type="diagnostic"'
        return sum(int(float(ln.rsplit(" ", 1)[1])) for ln in r.text.splitlines() if ln.startswith(prefix))


async def wait_for_ends(cfg: Config, clients: Clients, plans: list[Planned], faults_over: threading.Event,
                        last_fault_end: Any) -> None:
    """Until every accepted job is terminal, or nothing ended for ``stuck_after_s`` after the last fault."""
    pending = {p.task_id for p in plans if p.task_id}
    last_end = time.time()
    hard = time.monotonic() + cfg.max_wait_s
    while (pending or not faults_over.is_set()) and time.monotonic() < hard:  # every fault is injected
        states = await clients.read_all(sorted(pending))
        ended = {i for i, (doc, ok) in states.items() if ok and (doc is None or doc["status"] in TERMINAL)}
        if ended:
            pending -= ended
            last_end = time.time()
        if faults_over.is_set() and time.time() - max(last_end, last_fault_end()) > cfg.stuck_after_s:
            break
        await asyncio.sleep(2)


def wait_for_hooks(stack: ChaosStack, ids: list[str], quiet_s: float = 20, most_s: float = 120) -> None:
    """Webhooks are sent after the end (retried with backoff): wait until each job has its completed one, or
    none arrived for ``quiet_s``."""
    deadline = time.monotonic() + most_s
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        have = sum(1 for i in ids if stack.receiver.completed(i))
        if have == len(ids):
            return
        if have != seen:
            seen, quiet_since = have, time.monotonic()
        elif time.monotonic() - quiet_since > quiet_s:
            return
        time.sleep(0.5)


def fault_plan(cfg: Config) -> list[str]:
    return list(KINDS) * cfg.rounds


def run(cfg: Config) -> Report:
    started = datetime.now(timezone.utc)
    run_id = f"chaos-{started:%Y%m%d-%H%M%S}"
    root = ROOT / "var" / "chaos" / run_id
    cleanup = Cleanup()
    try:
        stack = ChaosStack(root, cfg.workers, cfg.concurrency, cleanup).start()
        clients = Clients(cfg, stack, stack.new_key(), run_id)
        plans = plan_jobs(cfg)
        injector = Injector(stack, cfg.redis_down_s, cfg.stop_s, cfg.seed)
        kinds = fault_plan(cfg)
        # Submits spread over the fault phase, so faults hit submits, queued jobs and running jobs alike.
        phase_s = cfg.warmup_s + len(kinds) * cfg.gap_s + cfg.rounds * (cfg.stop_s + cfg.redis_down_s + 10)
        pace_s = phase_s / max(1, cfg.jobs)
        print(f"chaos run {run_id}: {cfg.jobs} jobs from {cfg.clients} clients over ~{phase_s:.0f} s, "
              f"{cfg.workers} workers x {cfg.concurrency} pool processes, faults {kinds}; logs in {root}", flush=True)
        stop = threading.Event()
        faults_over = threading.Event()

        def inject() -> None:
            try:
                injector.run(kinds, cfg.warmup_s, cfg.gap_s, stop)
            finally:
                faults_over.set()

        t0 = time.monotonic()
        thread = threading.Thread(target=inject, name="chaos-faults", daemon=True)
        thread.start()
        asyncio.run(clients.run(plans, pace_s))
        print(f"  submits done: {sum(1 for p in plans if p.task_id)} accepted", flush=True)

        def last_fault_end() -> float:
            return max((f.ended for f in injector.faults), default=0.0)

        asyncio.run(wait_for_ends(cfg, clients, plans, faults_over, last_fault_end))
        stop.set()
        thread.join(cfg.stop_s + 120)
        ids = [p.task_id for p in plans if p.task_id]
        final = asyncio.run(clients.read_all(ids))
        wait_for_hooks(stack, [i for i in ids if (final[i][0] or {}).get("status") in TERMINAL])
        ledger = read_ledger(stack.ledger)
        by_job: dict[str, list[Any]] = {}
        for line in ledger:
            by_job.setdefault(line.job, []).append(line)
        verdicts = []
        redeliveries = 0
        for p in plans:
            if not p.task_id:
                continue
            doc, readable = final[p.task_id]
            hooks = stack.receiver.completed(p.task_id)
            redeliveries += len(hooks) - len({h.webhook_id for h in hooks})
            verdicts.append(judge(p, doc, not readable, hooks, by_job.get(p.task_id, [])))
        metric = asyncio.run(clients.finished_metric())
        recovered = recoveries(injector.faults, ledger, [t for p in plans for t in p.refused_at],
                               [t for p in plans for t in p.unreachable_at])
        report = build_report(asdict(cfg), started.isoformat(timespec="seconds"), time.monotonic() - t0, plans,
                              verdicts, metric, redeliveries, recovered)
        report.config["run_id"] = run_id
        report.config["faults"] = [f.as_dict() for f in injector.faults]
        report.config["worker_restarts"] = {w.proc.name: len(w.restarts) for w in stack.workers}
        if report.failed:
            report.config["logs_tail"] = stack.logs(15)
        out = Path(cfg.out) if cfg.out else root / "report.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report.as_dict(), indent=1, default=str))
        (ROOT / "var" / "chaos" / "latest.json").write_text(out.read_text())
        return report
    finally:
        cleanup.run()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[1])
    d = Config()
    for name, value in asdict(d).items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    args = ap.parse_args(argv)
    cfg = Config(**{k: getattr(args, k) for k in asdict(d)})
    if cfg.jobs < 20 or cfg.clients < 1 or cfg.rounds < 0:
        ap.error("--jobs must be at least 20 (every kind of job), --clients at least 1")
    try:
        report = run(cfg)
    except RuntimeError as exc:
        print(f"chaos run not made: {exc}", file=sys.stderr)
        return 2
    print()
    print(table(report))
    if report.bad:
        print()
        print(bad_jobs(report))
    print(f"\nJSON: var/chaos/{report.config['run_id']}/report.json (and var/chaos/latest.json)")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
