"""The per-tenant submit limiter (issue 18's bar: it holds at 5,000 submits/s with no false 429 below the limit).

Two parts, one run:

1. **The limiter on Redis** (jobs/limits.lua, as every API process calls it): ``PROCESSES`` processes, as
   many API processes would, each pacing its share of ``OFFERED`` takes per second for one tenant.
   - below: the tenant's limit is 20% above the offered rate: every take must pass (a refusal is a false 429);
   - over: the limit is half the offered rate: what passes must stay within rate × seconds + burst, and
     come close to it (the limiter neither leaks nor refuses too early).
2. **Through the API** (one uvicorn process, no worker: jobs wait in their queue): wrk at full speed on
   ``POST /api/v1/tasks/submit/``, once for a tenant whose limit is far above what the API can take (no
   answer may be a 429), once for a tenant limited to half the rate just measured (the accepted jobs counted
   in Redis, against the same bound).

``python -m bench.rate_limit_bench [--seconds 10] [--offered 5000]``; prints a JSON summary (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from aitasks.jobs import keys, limits
from aitasks.jobs.apikeys import create_key
from aitasks.settings import Settings
from bench import loadgen
from bench.procs import Cleanup
from bench.stacks import AitasksStack, start_redis

PROCESSES = 4
NOOP_JOB = {"task_type": "diagnostic", "parameters": {"duration_s": 0, "steps": 1}}


def _taker(url: str, tenant: str, per_s: float, seconds: float, start_at: float, out: Any) -> None:
    """One process: takes paced at ``per_s`` (in small batches sent as one pipeline), for ``seconds``."""
    r = redis.Redis.from_url(url)
    settings = Settings(default_max_queued=0)
    script = r.register_script(limits.TAKE)
    allowed = refused = 0
    tick = 0.01  # a batch every 10 ms
    per_tick = per_s * tick
    owed = 0.0
    time.sleep(max(0.0, start_at - time.time()))
    begin = time.perf_counter()
    n = 0
    while (elapsed := time.perf_counter() - begin) < seconds:
        owed += per_tick
        batch = int(owed)
        owed -= batch
        if batch:
            pipe = r.pipeline(transaction=False)
            for _ in range(batch):
                script_keys, args = limits.take_call(settings, tenant, 1)
                script(keys=script_keys, args=args, client=pipe)
            for raw in pipe.execute():
                if limits.Decision.parse(raw).allowed:
                    allowed += 1
                else:
                    refused += 1
            n += batch
        time.sleep(max(0.0, begin + (n / per_s) - time.perf_counter()))
    out.put({"allowed": allowed, "refused": refused, "seconds": elapsed})


def limiter_case(url: str, tenant: str, offered: float, rate: float, burst: int, seconds: float) -> dict[str, Any]:
    r = redis.Redis.from_url(url)
    r.hset(keys.tenant_limits(tenant), mapping={"submits_per_s": repr(rate), "burst": str(burst)})
    queue: Any = multiprocessing.Queue()
    start_at = time.time() + 0.5
    procs = [multiprocessing.Process(target=_taker, args=(url, tenant, offered / PROCESSES, seconds, start_at, queue))
             for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    parts = [queue.get(timeout=seconds + 60) for _ in procs]
    for p in procs:
        p.join()
    allowed = sum(p["allowed"] for p in parts)
    refused = sum(p["refused"] for p in parts)
    span = max(p["seconds"] for p in parts)
    bound = rate * span + burst
    return {"offered_per_s": offered, "achieved_per_s": round((allowed + refused) / span, 1),
            "limit_per_s": rate, "burst": burst, "seconds": round(span, 2), "allowed": allowed, "refused": refused,
            "bound": round(bound), "allowed_of_bound": round(allowed / bound, 4)}


def _cli(stack: AitasksStack, *args: str) -> None:
    out = subprocess.run([sys.executable, "-m", "aitasks.cli.main", *args], env=stack.env(), capture_output=True,
                         text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(out.stderr)


def api_case(stack: AitasksStack, wrk: str, work: Path, rate: float, burst: int, seconds: float,
             connections: int) -> dict[str, Any]:
    tenant_name = f"bench-{uuid.uuid4().hex[:8]}"
    key = create_key(stack.redis(), tenant_name, "bench")
    _cli(stack, "tenants", "set", tenant_name, "--submits-per-s", f"{rate:g}", "--burst", str(burst))
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    script = loadgen.write_wrk_script(work / f"post-{tenant_name}.lua", json.dumps(NOOP_JOB), headers)
    result = loadgen.run_wrk(wrk, tenant_name, stack.url + "/api/v1/tasks/submit/", script, connections, seconds)
    accepted = int(stack.redis().zcard(keys.tenant_index(tenant_name)))
    bound = rate * result.duration_s + burst
    return {"limit_per_s": rate, "burst": burst, "seconds": result.duration_s, "requests": result.requests,
            "req_per_s": result.rps, "accepted": accepted, "refused_or_errors": result.errors,
            "accepted_per_s": round(accepted / result.duration_s, 1), "bound": round(bound),
            "accepted_of_bound": round(accepted / bound, 4), "p50_ms": result.p50_ms, "p99_ms": result.p99_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--offered", type=float, default=5000.0, help="Takes per second offered to the limiter.")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    cleanup = Cleanup()
    try:
        with tempfile.TemporaryDirectory(prefix="aitasks-rate-") as tmp:
            work = Path(tmp)
            server = start_redis(work / "redis", cleanup)
            below = limiter_case(server.url, "below", args.offered, args.offered * 1.2, int(args.offered * 0.12),
                                 args.seconds)
            print("limiter below the limit:", json.dumps(below), flush=True)
            over = limiter_case(server.url, "over", args.offered, args.offered / 2, int(args.offered * 0.05),
                                args.seconds)
            print("limiter over the limit: ", json.dumps(over), flush=True)
            wrk = loadgen.ensure_wrk()
            api: dict[str, Any] = {}
            if wrk is None:
                print("wrk not available: the API part is left out", flush=True)
            else:
                stack = AitasksStack("rate", work / "stack", work / "logs", cleanup)
                stack.start_api()
                api["below"] = api_case(stack, wrk, work, 50_000, 5_000, args.seconds, args.connections)
                print("API below the limit:", json.dumps(api["below"]), flush=True)
                half = max(100.0, round(api["below"]["req_per_s"] / 2, -2))
                api["over"] = api_case(stack, wrk, work, half, int(half / 10), args.seconds, args.connections)
                print("API over the limit: ", json.dumps(api["over"]), flush=True)
            print("BENCHJSON " + json.dumps({"limiter": {"below": below, "over": over}, "api": api}), flush=True)
    finally:
        cleanup.run()


if __name__ == "__main__":
    main()
