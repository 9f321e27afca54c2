"""RabbitMQ against Redis as the broker (issue 21): the same no-op job, the same API and workers, one run.

Two deployments side by side, identical but for ``AITASKS_BROKER_URL``: each its own redis-server (job
state, events; the queues too for ``redis``), the API, and one cpu worker with ``--concurrency`` pool
processes; ``amqp`` also a private rabbitmq-server (tests/rabbitmq_server.py: quorum queues, publisher
confirms, the outbox relay in the worker).

- End to end, one job at a time: ``POST /api/v1/tasks/submit/`` then the job's SSE stream until SUCCESS
  (bench/e2e_bench.py's round trip); the two deployments' samples alternate. p50 and p99.
- Sustained: ``--jobs`` no-op jobs submitted at once over a few connections, until the outcome counter has
  counted them all (bench/e2e_bench.py's sustained round); ``--rounds`` rounds, alternating which broker
  goes first; the best round of each is reported, every round kept in the JSON.

    python -m bench.broker_bench [--jobs 2000] [--rounds 3] [--samples 200] [--concurrency 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.e2e_bench import SseClient, aitasks_sustained
from bench.procs import Cleanup
from bench.stacks import AitasksStack
from bench.stats import summary_ms

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from rabbitmq_server import RabbitServer  # noqa: E402

BROKERS = ("redis", "amqp")


def run(work: Path, cleanup: Cleanup, *, jobs: int, rounds: int, samples: int, concurrency: int,
        connections: int) -> dict[str, Any]:
    rabbit = RabbitServer(work / "rabbitmq").start()
    cleanup.push("rabbitmq-server", rabbit.close)
    env = {"redis": {}, "amqp": {"AITASKS_BROKER_URL": rabbit.url}}
    stacks = {b: AitasksStack(b, work / b, work / "logs", cleanup, env={"AITASKS_LOG_LEVEL": "WARNING", **env[b]})
              .start_api().start_worker(concurrency) for b in BROKERS}
    keys = {b: stacks[b].new_key() for b in BROKERS}
    clients = {b: SseClient(stacks[b].port, keys[b]) for b in BROKERS}
    for b in BROKERS:
        cleanup.push(f"{b} sse client", clients[b].close)
        for _ in range(20):  # warm-up: imports, connections, the relay's first publish
            clients[b].round_trip()

    trips: dict[str, list[float]] = {b: [] for b in BROKERS}
    for i in range(samples):
        for b in (BROKERS if i % 2 else BROKERS[::-1]):
            trips[b].append(clients[b].round_trip())
    round_trip = {b: summary_ms(trips[b]) for b in BROKERS}
    print("  end to end, one at a time (n=%d): " % samples + " | ".join(
        f"{b} p50 {round_trip[b]['p50_ms']:.2f} ms p99 {round_trip[b]['p99_ms']:.2f} ms" for b in BROKERS), flush=True)

    sustained: dict[str, list[dict[str, Any]]] = {b: [] for b in BROKERS}
    for i in range(rounds):
        for b in (BROKERS if i % 2 == 0 else BROKERS[::-1]):
            sustained[b].append(aitasks_sustained(stacks[b], keys[b], jobs, connections))
        print(f"  sustained round {i + 1}/{rounds} ({jobs} jobs): " + " | ".join(
            f"{b} {sustained[b][-1]['jobs_per_s']:.0f} jobs/s" for b in BROKERS), flush=True)
    best = {b: max(sustained[b], key=lambda x: x["jobs_per_s"]) for b in BROKERS}
    return {
        "worker_concurrency": concurrency, "jobs": jobs, "rounds": rounds, "submit_connections": connections,
        "round_trip": round_trip,
        "sustained_best": {b: {k: best[b][k] for k in ("jobs_per_s", "seconds", "submits_per_s", "not_success")}
                           for b in BROKERS},
        "sustained_all_rounds": sustained,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    cleanup = Cleanup()
    try:
        with tempfile.TemporaryDirectory(prefix="aitasks-broker-bench-") as tmp:
            out = run(Path(tmp), cleanup, jobs=args.jobs, rounds=args.rounds, samples=args.samples,
                      concurrency=args.concurrency, connections=args.connections)
            cleanup.run()
    finally:
        cleanup.run()
    text = json.dumps(out, indent=2)
    print(text if args.json is None else f"  written to {args.json}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
