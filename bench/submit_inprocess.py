"""The submit path's CPU per request without HTTP: the ASGI app driven in this process.

Part (a) measures what a client sees; this one says where the API's CPU goes, which (a) cannot: 64
coroutines post a no-op `diagnostic` job to the aitasks app and to the bare app (bench/bare_app.py),
straight into their ASGI callables, and the CPU time of this process per request is printed for both.
Redis (a private server this script starts) does its share in its own process, not counted here.
`--profile` prints cProfile's top functions of the aitasks run (slower: read it as shares, not times).

    .venv/bin/python -m bench.submit_inprocess              # 20,000 requests each, 3 rounds
    .venv/bin/python -m bench.submit_inprocess --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import redis
import uvloop

from aitasks.jobs.apikeys import create_key
from bench.procs import Cleanup
from bench.stacks import start_redis

CONCURRENCY = 64
BODY = orjson.dumps({"task_type": "diagnostic", "parameters": {"duration_s": 0, "steps": 1}})
Scope = dict[str, Any]


def request_scope(key: str) -> Scope:
    headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
               (b"authorization", f"Bearer {key}".encode()), (b"content-length", str(len(BODY)).encode())]
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/api/v1/tasks/submit/", "raw_path": b"/api/v1/tasks/submit/",
            "query_string": b"", "root_path": "", "headers": headers, "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000)}


async def post(app: Any, scope: Scope) -> int:
    """One request through the app; returns its status code."""
    delivered = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(scope), receive, send)
    return status


async def cpu_per_request(app: Any, scope: Scope, requests: int, profile: bool) -> tuple[float, float]:
    """(µs of this process's CPU per request, requests per second) over ``requests`` posts."""
    for _ in range(200):  # warm up caches and the Redis connection
        assert await post(app, scope) in (200, 202)
    per_worker = requests // CONCURRENCY
    bad = 0

    async def worker() -> None:
        nonlocal bad
        for _ in range(per_worker):
            if await post(app, scope) not in (200, 202):
                bad += 1

    profiler = cProfile.Profile() if profile else None
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if profiler:
        profiler.enable()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    if profiler:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        if os.environ.get("AITASKS_PROFILE_CALLERS"):
            pstats.Stats(profiler).print_callers(os.environ["AITASKS_PROFILE_CALLERS"])
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    assert bad == 0, f"{bad} requests failed"
    done = per_worker * CONCURRENCY
    return cpu / done * 1e6, done / wall


async def run(requests: int, rounds: int, profile: bool, redis_url: str, key: str) -> None:
    os.environ["AITASKS_REDIS_URL"] = redis_url
    os.environ["AITASKS_ENABLE_DIAGNOSTIC"] = "true"  # the body below is a diagnostic job (off by default)
    from aitasks.api.app import create_app
    from bench.bare_app import app as bare

    app = create_app()
    async with app.router.lifespan_context(app), bare.router.lifespan_context(bare):
        await asyncio.sleep(0.5)  # the event hub connects
        scope = request_scope(key)
        for i in range(rounds):
            bare_us, bare_rps = await cpu_per_request(bare, scope, requests, False)
            sub_us, sub_rps = await cpu_per_request(app, scope, requests, profile and i == rounds - 1)
            print(f"  round {i + 1}/{rounds}: bare {bare_us:6.1f} µs/request ({bare_rps:,.0f}/s), "
                  f"submit {sub_us:6.1f} µs/request ({sub_rps:,.0f}/s), ratio {bare_us / sub_us:.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    cleanup = Cleanup()
    try:
        with tempfile.TemporaryDirectory(prefix="aitasks-inprocess-") as tmp:
            server = start_redis(Path(tmp) / "redis", cleanup)
            os.environ["AITASKS_DATA_DIR"] = str(Path(tmp) / "data")
            key = create_key(redis.Redis.from_url(server.url), "bench-inprocess", "bench")
            uvloop.run(run(args.requests, args.rounds, args.profile, server.url, key))
    finally:
        cleanup.run()


if __name__ == "__main__":
    main()
