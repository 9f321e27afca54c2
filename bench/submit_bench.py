"""(a) Submit: `POST /api/v1/tasks/submit/` of aitasks next to the bare FastAPI endpoint, same load.

Both servers run one uvicorn process with the same settings; the load generator keeps the same number of
connections open on each, in alternating rounds, and the best round of each counts (noise on a shared
machine only ever slows a round down). No worker runs meanwhile, so the two cores go to the server and
the load generator, as they do for the bare endpoint; the accepted jobs simply wait in their queue.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.procs import Cleanup
from bench.stacks import AitasksStack, start_bare_app

SUBMIT_PATH = "/api/v1/tasks/submit/"
NOOP_JOB = {"task_type": "diagnostic", "parameters": {"duration_s": 0, "steps": 1}}


def run(work: Path, logs: Path, cleanup: Cleanup, *, connections: int, duration_s: float, rounds: int,
        warmup_s: float, wrk: str | None) -> dict[str, Any]:
    stack = AitasksStack("submit", work / "submit", logs, cleanup).start_api()
    bare_url = start_bare_app(logs, cleanup)
    key = stack.new_key()
    body = json.dumps(NOOP_JOB)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    targets = {"bare": bare_url + SUBMIT_PATH, "submit": stack.url + SUBMIT_PATH}
    script = loadgen.write_wrk_script(work / "post.lua", body, headers) if wrk else None

    def load(label: str, seconds: float) -> loadgen.LoadResult:
        if wrk and script:
            return loadgen.run_wrk(wrk, label, targets[label], script, connections, seconds)
        return loadgen.run_python(label, targets[label], body, headers, connections, seconds)

    for label in targets:
        load(label, warmup_s)
    results: dict[str, list[loadgen.LoadResult]] = {"bare": [], "submit": []}
    for i in range(rounds):
        for label in targets:
            r = load(label, duration_s)
            results[label].append(r)
            print(f"  round {i + 1}/{rounds} {label:<6} {r.rps:>8.0f} req/s  p50 {r.p50_ms:6.1f} ms  "
                  f"p99 {r.p99_ms:6.1f} ms  errors {r.errors}", flush=True)
    best = {label: max(rs, key=lambda r: r.rps) for label, rs in results.items()}
    accepted = int(stack.redis().hget("aitasks:metrics:submitted", "diagnostic") or 0)
    return {
        "generator": best["bare"].generator,
        "connections": connections,
        "duration_s": duration_s,
        "rounds": rounds,
        "bare": best["bare"].as_dict(),
        "submit": best["submit"].as_dict(),
        "all_rounds": {label: [r.as_dict() for r in rs] for label, rs in results.items()},
        "jobs_accepted": accepted,
    }
