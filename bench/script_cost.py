"""What a job's end costs inside Redis, fragment by fragment, and what redis-py adds around each call.

Redis runs the job's end (RUN_UPDATE: the UPDATE frame, jobs/end_state.lua, with every fragment of
jobs/atomic_end.py) as one script; `INFO commandstats` counts its whole time under `evalsha`, so the
benchmarks' CPU split cannot say which part of it costs what. This replays the end on copies of a real
record, with the frame alone, each fragment alone on top of it, and all of them, and reads Redis's own
clock for each variant (`usec_per_call` of `evalsha`, which includes the commands the script calls, and
the commands' own time, which does not include what calling them from Lua costs). It also times the
pool process's side of one call: redis-py's `Script.__call__` against the same command written and read
on a connection kept for it (jobs/script_call.py, what the workers' JobStore does).

    .venv/bin/python -m bench.script_cost                 # 2,000 ends a variant
    .venv/bin/python -m bench.script_cost --ends 5000

The record comes from a private stack (Redis, the API, a worker) that ran real `diagnostic` jobs; the
worker is stopped before the replay so nothing else touches Redis. Numbers are this machine's, under its
load: compare the rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path
from collections.abc import Callable
from typing import Any

import redis

from aitasks.jobs import atomic_end, keys, lua, run_scripts
from aitasks.jobs.script_call import ScriptConnection
from aitasks.jobs.store import update_args
from bench.e2e_bench import aitasks_sustained
from bench.procs import Cleanup
from bench.stacks import AitasksStack


def end_script(fragments: tuple[atomic_end.Fragment, ...]) -> str:
    """RUN_UPDATE as jobs/run_scripts.py builds it, with only ``fragments`` in its UPDATE."""
    return run_scripts.as_function(atomic_end.assemble(fragments)) + lua.load("aitasks.jobs", "run_update.lua")


def ended_record(r: redis.Redis) -> dict[Any, Any]:
    """One job's record as its run left it (SUCCESS), from the stack's Redis."""
    for name in r.scan_iter(match=keys.job("*"), count=1000):
        if r.type(name) == b"hash" and r.hget(name, "status") == b"SUCCESS":
            return r.hgetall(name)
    raise RuntimeError("no finished job in Redis")


def running_copies(r: redis.Redis, record: dict[Any, Any], n: int) -> list[tuple[str, str]]:
    """``n`` copies of ``record`` as they were while running (PROCESSING, claimed): (job id, run token)."""
    base = {k.decode(): v for k, v in record.items() if k not in (b"finished_at", b"result", b"artifacts")}
    base["status"] = b"PROCESSING"
    copies = []
    pipe = r.pipeline(transaction=False)
    for _ in range(n):
        job_id, token = str(uuid.uuid4()), uuid.uuid4().hex
        pipe.hset(keys.job(job_id), mapping={**base, "id": job_id, "run_token": token,
                                             "started_at": repr(time.time() - 0.002)})
        copies.append((job_id, token))
    pipe.execute()
    return copies


def end_args(token: str, result: dict[str, Any]) -> list[str]:
    """The runner's end of a successful run (worker/runner.py ``finish``), as RUN_UPDATE's ARGV."""
    values = {"status": "SUCCESS", "message": "Task completed successfully", "finished_at": time.time(),
              "progress": 100, "result": result, "artifacts": []}
    return ["1", "0", *update_args(values, 3600, f"run:{token}")]


def replay(r: redis.Redis, script: str, record: dict[Any, Any], n: int) -> dict[str, float]:
    """Redis's µs per end (the whole script) and per end in the commands it called, and their count."""
    sha = r.script_load(script)
    copies = running_copies(r, record, n)
    result = {"parameters": {"duration_s": 0.0, "steps": 1}, "ok": True}
    r.config_resetstat()
    for job_id, token in copies:
        answer = r.evalsha(sha, 2, keys.job(job_id), keys.events(job_id), *end_args(token, result))
        if int(answer[0]) <= 0:
            raise RuntimeError(f"the end was refused: {answer}")
    stats = r.info("commandstats")
    inner = {k: v for k, v in stats.items() if k not in ("cmdstat_evalsha", "cmdstat_config")}
    return {"us_per_end": float(stats["cmdstat_evalsha"]["usec"]) / n,
            "us_in_commands": sum(float(v["usec"]) for v in inner.values()) / n,
            "commands": sum(int(v["calls"]) for v in inner.values()) / n}


def client_side(r: redis.Redis, record: dict[Any, Any], n: int, rounds: int = 2) -> dict[str, float]:
    """The calling process's CPU µs per end (the best of ``rounds``): through redis-py's ``Script.__call__``
    (what JobStore did before) and through ``ScriptConnection`` (jobs/script_call.py, what it does now)."""
    script, scripts = r.register_script(end_script(atomic_end.FRAGMENTS)), ScriptConnection(r)
    result = {"parameters": {"duration_s": 0.0, "steps": 1}, "ok": True}
    calls: dict[str, Callable[[list[str], list[str]], Any]] = {
        "Script.__call__": lambda job_keys, args: script(keys=job_keys, args=args),
        "ScriptConnection.call": lambda job_keys, args: scripts.call(script, job_keys, args)}
    out: dict[str, float] = {}
    for _ in range(rounds):
        for how, call in calls.items():
            copies = running_copies(r, record, n)
            t0 = os.times()
            for job_id, token in copies:
                call([keys.job(job_id), keys.events(job_id)], end_args(token, result))
            t1 = os.times()
            us = 1e6 * ((t1.user - t0.user) + (t1.system - t0.system)) / n
            out[how] = min(us, out.get(how, us))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ends", type=int, default=2000, help="ends replayed per variant")
    args = parser.parse_args()
    cleanup = Cleanup()
    try:
        with tempfile.TemporaryDirectory(prefix="aitasks-script-cost-") as tmp:
            stack = AitasksStack("script-cost", Path(tmp), Path(tmp) / "logs", cleanup).start_api().start_worker(2)
            aitasks_sustained(stack, stack.new_key(), 200, 8)
            stack.stop_workers()
            r = stack.redis()
            record = ended_record(r)
            fragments = atomic_end.FRAGMENTS
            variants: list[tuple[str, tuple[atomic_end.Fragment, ...]]] = [
                ("every fragment (what runs)", fragments), ("the frame alone", ()),
                *((f"frame + {f.name}", (f,)) for f in fragments),
                ("the frame alone, again", ()), ("every fragment, again", fragments)]
            print(f"Redis's time per job end (RUN_UPDATE), {args.ends} ends a variant, on copies of one real record:")
            print(f"  {'variant':30} {'us/end':>7} {'in commands':>12} {'commands':>9} {'us over frame':>14}")
            frame = None
            for name, chosen in variants:
                row = replay(r, end_script(chosen), record, args.ends)
                if not chosen and frame is None:
                    frame = row["us_per_end"]
                over = "" if frame is None or not chosen else f"{row['us_per_end'] - frame:+.1f}"
                print(f"  {name:30} {row['us_per_end']:7.1f} {row['us_in_commands']:12.1f} "
                      f"{row['commands']:9.1f} {over:>14}", flush=True)
            print("\nThe pool process's CPU per end call (user + system µs):")
            for how, us in client_side(r, record, args.ends).items():
                print(f"  {how:26} {us:7.1f}")
    finally:
        cleanup.run()


if __name__ == "__main__":
    main()
