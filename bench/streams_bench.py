"""Live streams at scale (issue 22): many SSE streams held by one API process.

`python -m bench.streams_bench [--streams 10000] [--latency-streams 1000] [--submits 3000]`

1. **Held**: ``--streams`` SSE streams opened on pending jobs (a `diagnostic` job on the `gpu` queue, which
   no worker here serves, so each stays PENDING and its stream stays open), spread over 100 jobs. The API
   process's RSS before and after, divided by the streams: memory per open stream.
2. **Submits beside them**: ``--submits`` submits over 8 keep-alive connections before the streams are
   opened, while they are open, and after they are closed; the ratio is "while" over the mean of the
   other two (the same run, the same API process).
3. **Finish -> client**: ``--latency-streams`` cpu jobs queued with no worker running, one stream open on
   each, then a cpu worker started: for each stream, the time from the job's ``finished_at`` (the worker's
   clock, milliseconds; the same machine) to the moment its terminal message is read here.

The client is raw asyncio sockets (bench/httpclient.py's style): ~a few KB a connection here, so the
process measured is the API. Everything runs on private Redis and free ports; all is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from bench.e2e_bench import SUBMIT_PATH
from bench.httpclient import Connection, build_request
from bench.procs import Cleanup
from bench.report import write_json
from bench.stacks import AitasksStack
from bench.stats import summary_ms

PENDING_JOB = orjson.dumps({"task_type": "diagnostic", "parameters": {"queue": "gpu"}})
SHORT_JOB = orjson.dumps({"task_type": "diagnostic", "parameters": {"duration_s": 0.01, "steps": 1}})
TERMINAL = {"SUCCESS", "FAILURE", "REVOKED"}


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class Stream:
    """One SSE stream: opened, its messages parsed as they come (``data:`` lines only)."""

    def __init__(self, port: int, key: str, task_id: str):
        self.request = build_request("GET", "127.0.0.1", port, f"/api/v1/tasks/{task_id}/events",
                                     headers={"Authorization": f"Bearer {key}", "Accept": "text/event-stream"})
        self.port = port
        self.first: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.end: asyncio.Future[tuple[float, dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self.writer: asyncio.StreamWriter | None = None

    async def run(self) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(self.request)
        head = await reader.readuntil(b"\r\n\r\n")
        if head[9:12] != b"200":
            raise RuntimeError(f"events answered {head[:200]!r}")
        while True:
            line = await reader.readline()
            if not line:
                break
            i = line.find(b"data: ")
            if i < 0 or b'"status"' not in line:
                continue
            message = orjson.loads(line[i + 6:])
            if not self.first.done():
                self.first.set_result(message)
            if message["status"] in TERMINAL:
                self.end.set_result((time.time(), message))
                break
        self.close()

    def close(self) -> None:
        if self.writer is not None and not self.writer.is_closing():
            self.writer.close()


async def open_streams(port: int, key: str, task_ids: list[str], n: int, batch: int = 500) -> tuple[list[Stream], list[asyncio.Task[None]]]:
    """``n`` streams over ``task_ids`` (round robin), opened ``batch`` at a time; returns once each has its
    first message."""
    streams: list[Stream] = []
    tasks: list[asyncio.Task[None]] = []
    for start in range(0, n, batch):
        group = [Stream(port, key, task_ids[i % len(task_ids)]) for i in range(start, min(n, start + batch))]
        for s in group:
            tasks.append(asyncio.create_task(s.run()))
        await asyncio.wait_for(asyncio.gather(*(s.first for s in group)), 120)
        streams.extend(group)
    return streams, tasks


async def submit_many(port: int, key: str, body: bytes, n: int, connections: int = 8) -> tuple[list[str], float]:
    request = build_request("POST", "127.0.0.1", port, SUBMIT_PATH, body,
                            {"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    ids: list[str] = []
    left = n

    async def one() -> None:
        nonlocal left
        conn = await Connection("127.0.0.1", port).open()
        try:
            while left > 0:
                left -= 1
                status, answer = await conn.send(request)
                if status != 202:
                    raise RuntimeError(f"submit answered {status}: {answer[:300]!r}")
                ids.append(orjson.loads(answer)["task_id"])
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    return ids, n / (time.perf_counter() - t0)


async def close_all(streams: list[Stream], tasks: list[asyncio.Task[None]]) -> None:
    for s in streams:
        s.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def finished_at(message: dict[str, Any]) -> float:
    return datetime.fromisoformat(message["finished_at"].replace("Z", "+00:00")).timestamp()


async def measure(stack: AitasksStack, key: str, args: argparse.Namespace) -> dict[str, Any]:
    assert stack.api is not None
    pid = stack.api.pid
    await submit_many(stack.port, key, PENDING_JOB, 300)  # warm the submit path
    _, before = await submit_many(stack.port, key, PENDING_JOB, args.submits)
    holders, _ = await submit_many(stack.port, key, PENDING_JOB, 100)
    await asyncio.sleep(1.0)
    rss0 = rss_bytes(pid)
    t0 = time.perf_counter()
    streams, tasks = await open_streams(stack.port, key, holders, args.streams)
    opened_s = time.perf_counter() - t0
    await asyncio.sleep(2.0)  # let the API settle (allocator, gc) before weighing it
    rss1 = rss_bytes(pid)
    per_stream = (rss1 - rss0) / args.streams
    print(f"  {args.streams} streams open in {opened_s:.1f} s: API RSS {rss0 / 2**20:.0f} -> {rss1 / 2**20:.0f} MiB, "
          f"{per_stream / 1024:.1f} KiB a stream", flush=True)
    _, during = await submit_many(stack.port, key, PENDING_JOB, args.submits)
    alive = sum(1 for t in tasks if not t.done())
    await close_all(streams, tasks)
    await asyncio.sleep(2.0)
    _, after = await submit_many(stack.port, key, PENDING_JOB, args.submits)
    ratio = during / ((before + after) / 2)
    print(f"  submits/s: {before:.0f} before, {during:.0f} with the streams open, {after:.0f} after: "
          f"{ratio:.2f}x ({alive} of {args.streams} streams still open while submitting)", flush=True)

    ids, _ = await submit_many(stack.port, key, SHORT_JOB, args.latency_streams)
    streams, tasks = await open_streams(stack.port, key, ids, args.latency_streams)
    stack.start_worker(args.concurrency)
    ends = await asyncio.wait_for(asyncio.gather(*(s.end for s in streams)), 300)
    lags = [max(0.0, seen - finished_at(m)) for seen, m in ends if m["status"] == "SUCCESS"]
    await close_all(streams, tasks)
    lag = summary_ms(lags)
    print(f"  finish -> client over {len(lags)} of {args.latency_streams} streams: p50 {lag['p50_ms']:.2f} ms, "
          f"p99 {lag['p99_ms']:.2f} ms", flush=True)
    return {
        "streams": args.streams, "open_seconds": round(opened_s, 2), "api_rss_before": rss0, "api_rss_after": rss1,
        "bytes_per_stream": round(per_stream), "streams_open_while_submitting": alive,
        "submits_per_s": {"before": round(before), "during": round(during), "after": round(after)},
        "submit_ratio_with_streams": round(ratio, 3),
        "finish_to_client": {"streams": args.latency_streams, "measured": len(lags), **lag},
    }


def run(work: Path, logs: Path, cleanup: Cleanup, *, quick: bool = False) -> dict[str, Any]:
    """`make bench`'s part: the defaults (10,000 streams), or with ``quick`` 1,000 (200 for the latency part,
    500 submits a round). The file limit is raised for this process and the API it starts."""
    args = argparse.Namespace(streams=1_000 if quick else 10_000, latency_streams=200 if quick else 1_000,
                              submits=500 if quick else 3_000, concurrency=2)
    raise_file_limit(args.streams + 1000)
    stack = AitasksStack("streams", work / "streams", logs, cleanup).start_api()
    return asyncio.run(measure(stack, stack.new_key(), args))


def raise_file_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))  # the API inherits it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--latency-streams", type=int, default=1_000)
    parser.add_argument("--submits", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=2, help="cpu worker processes for the latency part")
    parser.add_argument("--json", type=Path, default=Path("var/streams_bench.json"))
    args = parser.parse_args()
    raise_file_limit(args.streams + 1000)
    cleanup = Cleanup()
    try:
        with tempfile.TemporaryDirectory(prefix="aitasks-streams-") as tmp:
            work = Path(tmp)
            stack = AitasksStack("streams", work / "stack", work / "logs", cleanup).start_api()
            key = stack.new_key()
            result = asyncio.run(measure(stack, key, args))
            cleanup.run()
    finally:
        cleanup.run()
    write_json(result, args.json)
    print(f"  written to {args.json}")


if __name__ == "__main__":
    main()
