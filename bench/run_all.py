"""`make bench`: the platform benchmarks, each next to its baseline measured in the same run.

    .venv/bin/python -m bench.run_all                 # full run (about 13 minutes: 4.5 for (a)-(c), 1.5 for (c'), 7 for (d)-(e))
    .venv/bin/python -m bench.run_all --quick         # smoke run (about 2 minutes)
    .venv/bin/python -m bench.run_all --only images   # (c) the image jobs only, JSON and multipart clients (about 3 minutes)
    .venv/bin/python -m bench.run_all --only streams  # (c') 10,000 SSE streams held by one API process (about 90 s)
    .venv/bin/python -m bench.run_all --only documents      # (d) document pipeline throughput (about 70 s)
    .venv/bin/python -m bench.run_all --only documents-e2e  # (d') a document through the API and a worker (60 s)
    .venv/bin/python -m bench.run_all --only documents-batching  # (d'') 50 one-page documents, batched vs one at a time (about 4 min)
    .venv/bin/python -m bench.run_all --only search         # (e) search quality on two labelled sets (about 35 s)

Prints a table and the ratios against the targets, and writes them as JSON to var/bench/last.json.
Everything runs on private redis-servers and free ports of 127.0.0.1, and is stopped at the end.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    documents_batching_bench,
    documents_bench,
    documents_e2e,
    e2e_bench,
    image_bench,
    loadgen,
    report,
    search_set,
    search_tuning_set,
    streams_bench,
    submit_bench,
)
from bench.procs import ROOT, Cleanup


def env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def image_paths(text: str) -> tuple[str, ...]:
    paths = tuple(dict.fromkeys(p.strip() for p in text.split(",") if p.strip()))
    if not paths or set(paths) - set(image_bench.PATHS):
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more of {', '.join(image_bench.PATHS)}")
    return paths


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a short smoke run: fewer, shorter rounds")
    p.add_argument("--only", choices=("submit", "e2e", "images", "streams", "documents", "documents-e2e",
                                       "documents-batching", "search"),
                   help="run one part only")
    p.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto",
                   help="HTTP load generator for (a): wrk (installed with apt-get if missing and allowed), "
                        "or the in-process asyncio one; auto = wrk when it can be had")
    p.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    p.add_argument("--connections", type=int, default=64, help="concurrent connections for (a) (default 64)")
    p.add_argument("--concurrency", type=int, default=2,
                   help="pool processes of the aitasks worker and of the raw Celery worker (default 2)")
    p.add_argument("--jobs", type=int, help="jobs per sustained round of (b) (default 1000; quick 200)")
    p.add_argument("--image-samples", type=int,
                   help="sequential jobs per image case in (c), bare and through the API (default 30; quick 5)")
    p.add_argument("--image-jobs", type=int, help="jobs per image throughput batch in (c) (default 30; quick 6)")
    p.add_argument("--image-paths", default=",".join(image_bench.PATHS), type=image_paths, metavar="PATHS",
                   help="client paths through the API in (c), comma-separated: json (base64 in, Prefer: wait, "
                        "base64 out), multipart (file parts, the SSE stream, the result from the artifacts route); "
                        "default both")
    p.add_argument("--image-rounds", type=int, default=1,
                   help="throughput rounds in (c) per worker count, API batches then the bare baseline, the best "
                        "of each kept (default 1; more filter out load from elsewhere)")
    p.add_argument("--worker-env", action="append", default=[], type=env_pair, metavar="NAME=VALUE",
                   help="an environment variable for the image workers of (c), to try a setting (repeatable)")
    p.add_argument("--out", type=Path, default=ROOT / "var" / "bench" / "last.json", help="JSON results")
    p.add_argument("--keep", action="store_true", help="keep the Redis data of the run under var/bench/run")
    return p.parse_args(argv)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    if args.quick:
        return {"duration_s": 3, "rounds": 1, "warmup_s": 1, "samples": 40, "warmup": 5,
                "jobs": args.jobs or 200, "sustained_rounds": 1,
                "image_samples": args.image_samples or 5, "image_warmup": 1, "image_jobs": args.image_jobs or 6}
    return {"duration_s": 8, "rounds": 3, "warmup_s": 2, "samples": 300, "warmup": 20,
            "jobs": args.jobs or 1000, "sustained_rounds": 2,
            "image_samples": args.image_samples or 30, "image_warmup": 2, "image_jobs": args.image_jobs or 30}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = settings(args)
    # SIGTERM ends the run like Ctrl-C does: through the finally below, which stops every child.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    base = ROOT / "var" / "bench"
    work, logs = base / "run", base / "logs"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(logs, ignore_errors=True)
    work.mkdir(parents=True)
    logs.mkdir(parents=True)

    result: dict[str, Any] = {
        "command": "python -m bench.run_all " + " ".join(sys.argv[1:] if argv is None else argv),
        "started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "quick": args.quick, "settings": cfg, "machine": report.machine(), "load_before": report.load_average(),
    }
    started = time.monotonic()
    cleanup = Cleanup()
    failed = False
    try:
        if args.only in (None, "submit"):
            wrk = None
            if args.generator != "python":
                wrk = loadgen.ensure_wrk(allow_install=not args.no_install)
                if wrk is None and args.generator == "wrk":
                    print("wrk is not installed and cannot be installed here", file=sys.stderr)
                    return 2
                if wrk is None:
                    print("  wrk unavailable: using the in-process asyncio load generator", flush=True)
            result["wrk"] = loadgen.wrk_version(wrk) if wrk else None
            print(f"(a) submit vs bare endpoint, {args.connections} connections", flush=True)
            sub_cleanup = Cleanup()
            try:
                result["submit"] = submit_bench.run(
                    work, logs, sub_cleanup, connections=args.connections, duration_s=cfg["duration_s"],
                    rounds=cfg["rounds"], warmup_s=cfg["warmup_s"], wrk=wrk)
            finally:
                sub_cleanup.run()  # its servers are not needed for (b): free the cores
        if args.only in (None, "e2e"):
            print(f"(b) no-op job end to end vs raw Celery, worker concurrency {args.concurrency}", flush=True)
            e2e_cleanup = Cleanup()
            try:
                result["e2e"] = e2e_bench.run(
                    work, logs, e2e_cleanup, concurrency=args.concurrency, samples=cfg["samples"],
                    warmup=cfg["warmup"], sustained_jobs=cfg["jobs"], sustained_rounds=cfg["sustained_rounds"],
                    submit_connections=8)
            finally:
                e2e_cleanup.run()  # free the cores for (c)
        if args.only in (None, "images"):
            print(f"(c) image jobs: through the API ({', '.join(args.image_paths)}) vs the bare job function; jobs/min "
                  "with 1 and 2 worker processes", flush=True)
            result["images"] = image_bench.run(
                work, logs, cleanup, samples=cfg["image_samples"], warmup=cfg["image_warmup"],
                jobs=cfg["image_jobs"], worker_env=dict(args.worker_env), paths=args.image_paths,
                rounds=args.image_rounds)
        cleanup.run()  # free the cores
        if args.only in (None, "streams"):
            print("(c') live streams: memory per open SSE stream, submits with them open vs without, finish -> "
                  "client", flush=True)
            streams_cleanup = Cleanup()
            try:
                result["streams"] = streams_bench.run(work, logs, streams_cleanup, quick=args.quick)
            finally:
                streams_cleanup.run()
        # (d) and (e) run in this process and start nothing
        if args.only in (None, "documents"):
            print("(d) document pipeline: pages/s and chunks/s next to the library calls they wrap", flush=True)
            result["documents"] = documents_bench.run(quick=args.quick)
        if args.only in (None, "documents-e2e"):
            print("(d') a document through the API and a worker vs the pipeline in this process", flush=True)
            docs_cleanup = Cleanup()
            try:
                result["documents_e2e"] = documents_e2e.run(work / "documents", logs, docs_cleanup, quick=args.quick)
            finally:
                docs_cleanup.run()
        if args.only in (None, "documents-batching"):
            print("(d'') 50 one-page documents at once: batched embedding vs one at a time; search unchanged", flush=True)
            batching_cleanup = Cleanup()
            try:
                result["documents_batching"] = documents_batching_bench.run(work / "batching", batching_cleanup,
                                                                            quick=args.quick)
            finally:
                batching_cleanup.run()
        if args.only in (None, "search"):
            print("(e) search quality: vector, keyword and hybrid on a labelled set", flush=True)
            result["search"] = search_set.run(quick=args.quick)
            print("(e') search fusions on the tuning set (the set fusion weights are chosen on)", flush=True)
            result["search_tuning"] = search_tuning_set.run(quick=args.quick)
    except KeyboardInterrupt:
        print("interrupted: stopping everything", file=sys.stderr)
        failed = True
    except Exception as exc:
        print(f"benchmark failed: {exc}\n(logs in {logs})", file=sys.stderr)
        failed = True
    finally:
        cleanup.run()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if failed:
        return 1
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    result["load_after"] = report.load_average()
    result["ratios"] = report.ratios(result)
    result["verdicts"] = report.verdicts(result["ratios"])
    print(report.render(result))
    if "documents" in result:
        print(documents_bench.render(result["documents"]))
    if "documents_e2e" in result:
        print(documents_e2e.render(result["documents_e2e"]))
    if "documents_batching" in result:
        print(documents_batching_bench.render(result["documents_batching"]))
    if "search" in result:
        print(search_set.render(result["search"]))
    if "search_tuning" in result:
        print(search_tuning_set.render(result["search_tuning"]))
    report.write_json(result, args.out)
    print(f"results: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
