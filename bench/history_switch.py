"""What the store of record costs the job path (issue 17): the same no-op load with the history hand-off
and its recorder on (the default) and off (``AITASKS_HISTORY_ENABLED=false``), in one run, rounds
alternating which goes first; and what a finished job leaves in Redis once it is recorded.

Each round and mode gets a fresh stack: a private redis-server, the API (one uvicorn process, as
``aitasks api``), one cpu worker (``--concurrency 2``; with history on, its recorder, a niced child
process, writes the embedded SQLite). A warm-up of 200 jobs, then ``--jobs`` no-op ``diagnostic`` jobs submitted over HTTP
on ``--connections`` keep-alive connections (bench/e2e_bench.py's sustained measure):

- submits/s: N ÷ the time until the last submit was answered ``202``;
- jobs/s: N ÷ the time until the job-outcome counter (written with the terminal state) counted all N;
- Redis bytes per finished job: ``INFO memory`` used_memory before the N and after them, once the
  recorder has drained the hand-off stream and ``--keep-s`` (AITASKS_RECORDED_KEEP_S, default here 2,
  the product's 60) has passed; with history off Redis keeps each record for its retention (an hour).

The issue's bars: submits/s and jobs/s with history on at least 0.95x off; under 1 KB of Redis per job
once recorded.

    python -m bench.history_switch [--jobs 2000] [--connections 8] [--rounds 3] [--keep-s 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aitasks.jobs import keys
from bench.e2e_bench import aitasks_sustained
from bench.procs import Cleanup
from bench.stacks import AitasksStack

MODES = ("on", "off")


class SwitchStack(AitasksStack):
    """An AitasksStack whose API and workers all get the history setting (and the keep time)."""

    def __init__(self, name: str, root: Path, log_dir: Path, cleanup: Cleanup, extra: dict[str, str]):
        self.extra = extra
        super().__init__(name, root, log_dir, cleanup)

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return super().env({**self.extra, **(extra or {})})


def _drained(stack: AitasksStack, timeout_s: float = 120) -> float:
    """Seconds until the hand-off stream is empty and nothing is pending in its group."""
    r = stack.redis()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if r.xlen(keys.HISTORY_STREAM) == 0:
            groups = r.xinfo_groups(keys.HISTORY_STREAM) if r.exists(keys.HISTORY_STREAM) else []
            if all(int(g["pending"]) == 0 for g in groups):
                return time.perf_counter() - t0
        time.sleep(0.05)
    raise RuntimeError(f"the recorder did not drain the history stream in {timeout_s}s")


def one(mode: str, round_no: int, work: Path, logs: Path, args: argparse.Namespace) -> dict[str, Any]:
    cleanup = Cleanup()
    try:
        env = {"AITASKS_HISTORY_ENABLED": "true" if mode == "on" else "false",
               "AITASKS_RECORDED_KEEP_S": str(args.keep_s)}
        stack = SwitchStack(f"history-{mode}-{round_no}", work / f"{mode}-{round_no}", logs, cleanup, env)
        stack.start_api().start_worker(args.concurrency)
        key = stack.new_key()
        aitasks_sustained(stack, key, 200, args.connections)  # warm-up: imports, pools, SQLite file
        if mode == "on":
            _drained(stack)
        time.sleep(args.keep_s + 1.0)  # the warm-up's records settle before the measure starts
        out = aitasks_sustained(stack, key, args.jobs, args.connections)
        drained_s = _drained(stack) if mode == "on" else 0.0
        time.sleep(args.keep_s + 1.0)  # the keep time passes (the same wait for both modes)
        after = int(stack.redis().info("memory")["used_memory"])
        out["recorder_drained_after_s"] = round(drained_s, 3)
        out["redis_bytes_per_job_settled"] = round((after - out["redis_used_memory_before"]) / args.jobs, 1)
        return out
    finally:
        cleanup.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--keep-s", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="aitasks-history-switch-") as tmp:
        work, logs = Path(tmp), Path(tmp) / "logs"
        logs.mkdir()
        for i in range(args.rounds):
            for mode in MODES if i % 2 == 0 else MODES[::-1]:
                out = one(mode, i, work, logs, args)
                results[mode].append(out)
                print(f"  round {i + 1}/{args.rounds} history {mode:3}: {out['jobs_per_s']:7.1f} jobs/s, "
                      f"submits {out['submits_per_s']:7.1f}/s, Redis {out['redis_bytes_per_job_settled']:7.1f} "
                      f"B/job settled ({out['redis_bytes_per_job']:.0f} at the end), recorder drained "
                      f"{out['recorder_drained_after_s']:.2f} s after", flush=True)
    summary: dict[str, Any] = {}
    for mode in MODES:
        rounds = results[mode]
        summary[mode] = {
            "jobs_per_s_median": statistics.median(r["jobs_per_s"] for r in rounds),
            "submits_per_s_median": statistics.median(r["submits_per_s"] for r in rounds),
            "redis_bytes_per_job_settled_median": statistics.median(r["redis_bytes_per_job_settled"] for r in rounds),
        }
    on, off = summary["on"], summary["off"]
    summary["ratio_jobs_per_s"] = round(on["jobs_per_s_median"] / off["jobs_per_s_median"], 3)
    summary["ratio_submits_per_s"] = round(on["submits_per_s_median"] / off["submits_per_s_median"], 3)
    print(f"history on / off (medians of {args.rounds}): jobs/s {on['jobs_per_s_median']:.1f} / "
          f"{off['jobs_per_s_median']:.1f} = {summary['ratio_jobs_per_s']:.3f}x; submits/s "
          f"{on['submits_per_s_median']:.1f} / {off['submits_per_s_median']:.1f} = "
          f"{summary['ratio_submits_per_s']:.3f}x; Redis per job once recorded "
          f"{on['redis_bytes_per_job_settled_median']:.0f} B (history off: "
          f"{off['redis_bytes_per_job_settled_median']:.0f} B)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)  # var/ is not in a fresh clone
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "summary": summary,
                                         "rounds": results}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
