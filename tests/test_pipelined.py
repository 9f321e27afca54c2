"""The API's pipelined Redis connection (jobs/pipelined.py) against a real redis-server: replies reach
the right callers under concurrency, errors and cancelled callers do not put the stream out of step,
scripts survive a flush, AUTH and SELECT come from the URL, and a dead, frozen or restarted Redis
gives redis-py's ConnectionError / TimeoutError quickly and a working connection afterwards."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aitasks.jobs.pipelined import PipelinedRedis, supports
from aitasks.service.redis_server import RedisServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    s = RedisServer(tmp_path / "redis", appendonly=False).start()
    yield s
    if s.proc is not None and s.proc.poll() is None:
        os.kill(s.proc.pid, signal.SIGCONT)
    s.kill()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_concurrent_commands_each_get_their_own_reply(server: RedisServer) -> None:
    async def main() -> list[Any]:
        pipe = PipelinedRedis(server.url)
        try:
            return await asyncio.gather(*(pipe.execute("ECHO", f"reply-{i}") for i in range(2000)))
        finally:
            await pipe.aclose()

    replies = run(main())
    assert replies == [f"reply-{i}".encode() for i in range(2000)]


def test_an_error_reply_fails_only_its_own_command(server: RedisServer) -> None:
    async def main() -> list[Any]:
        pipe = PipelinedRedis(server.url)
        try:
            await pipe.execute("SET", "text", "not a number")
            return await asyncio.gather(pipe.execute("INCR", "counter"), pipe.execute("INCR", "text"),
                                        pipe.execute("INCR", "counter"), return_exceptions=True)
        finally:
            await pipe.aclose()

    first, bad, second = run(main())
    assert (first, second) == (1, 2)
    assert isinstance(bad, ResponseError) and "not an integer" in str(bad)


def test_a_cancelled_caller_does_not_shift_the_replies(server: RedisServer) -> None:
    async def main() -> tuple[Any, Any]:
        pipe = PipelinedRedis(server.url)
        try:
            slow = asyncio.ensure_future(pipe.execute("BLPOP", "nothing-here", "0.3"))
            await asyncio.sleep(0.05)
            slow.cancel()  # its reply (nil, after 0.3 s) still comes and must be dropped
            after = await pipe.execute("ECHO", "mine")
            return slow.cancelled(), after
        finally:
            await pipe.aclose()

    cancelled, after = run(main())
    assert cancelled and after == b"mine"


def test_a_flushed_script_is_loaded_again(server: RedisServer) -> None:
    script = "return ARGV[1] .. KEYS[1]"
    sha = hashlib.sha1(script.encode()).hexdigest()

    async def main() -> list[Any]:
        pipe = PipelinedRedis(server.url)
        try:
            first = await pipe.evalsha(sha, script, ["k"], ["v-"])
            await pipe.execute("SCRIPT", "FLUSH")  # as a Redis restart does
            second = await pipe.evalsha(sha, script, ["k"], ["w-"])
            third = await pipe.evalsha(sha, script, ["k"], ["x-"])
            return [first, second, third]
        finally:
            await pipe.aclose()

    assert run(main()) == [b"v-k", b"w-k", b"x-k"]


def test_password_and_database_come_from_the_url(server: RedisServer) -> None:
    admin = redis.Redis(port=server.port)
    admin.config_set("requirepass", "s3cret")
    try:
        async def main() -> None:
            pipe = PipelinedRedis(f"redis://:s3cret@127.0.0.1:{server.port}/5")
            try:
                await pipe.execute("SET", "where", "db5")
            finally:
                await pipe.aclose()

            wrong = PipelinedRedis(f"redis://:nope@127.0.0.1:{server.port}/0")
            with pytest.raises(ResponseError):
                await wrong.execute("PING")
            await wrong.aclose()

        run(main())
        check = redis.Redis(port=server.port, password="s3cret", db=5)
        assert check.get("where") == b"db5"
        assert redis.Redis(port=server.port, password="s3cret", db=0).get("where") is None
    finally:
        redis.Redis(port=server.port, password="s3cret").config_set("requirepass", "")


def test_redis_down_fails_fast_and_a_restart_is_picked_up(server: RedisServer) -> None:
    async def main() -> tuple[float, Any]:
        pipe = PipelinedRedis(server.url, connect_timeout_s=1.0, reply_timeout_s=1.5)
        try:
            assert await pipe.execute("PING") == b"PONG"
            server.kill()
            t0 = time.monotonic()
            with pytest.raises(RedisConnectionError):
                await pipe.execute("PING")
            elapsed = time.monotonic() - t0
            server.start()
            return elapsed, await pipe.execute("PING")
        finally:
            await pipe.aclose()

    elapsed, after = run(main())
    assert elapsed < 1.5
    assert after == b"PONG"


def test_a_frozen_redis_times_out_and_the_next_command_reconnects(server: RedisServer) -> None:
    """SIGSTOP: the socket stays open but nothing answers; every waiting command fails with TimeoutError
    after the reply timeout, and once Redis runs again a new connection serves the next command."""
    assert server.proc is not None

    async def main() -> tuple[list[Any], float, Any]:
        pipe = PipelinedRedis(server.url, connect_timeout_s=1.0, reply_timeout_s=0.5)
        try:
            assert await pipe.execute("PING") == b"PONG"
            os.kill(server.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
            t0 = time.monotonic()
            waiting = await asyncio.gather(*(pipe.execute("ECHO", str(i)) for i in range(5)), return_exceptions=True)
            elapsed = time.monotonic() - t0
            os.kill(server.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
            return waiting, elapsed, await pipe.execute("ECHO", "back")
        finally:
            await pipe.aclose()

    waiting, elapsed, after = run(main())
    assert all(isinstance(w, RedisTimeoutError) for w in waiting), waiting
    assert 0.4 < elapsed < 1.5, elapsed
    assert after == b"back"


def test_nothing_listening_is_a_connection_error() -> None:
    from aitasks.service.redis_server import free_port

    async def main() -> None:
        pipe = PipelinedRedis(f"redis://127.0.0.1:{free_port()}/0")
        with pytest.raises(RedisConnectionError):
            await pipe.execute("PING")

    run(main())


def test_tls_urls_are_left_to_redis_py() -> None:
    assert supports("redis://h:6379/0") and supports("unix:///tmp/redis.sock")
    assert not supports("rediss://h:6380/0")
    with pytest.raises(ValueError):
        PipelinedRedis("rediss://h:6380/0")
