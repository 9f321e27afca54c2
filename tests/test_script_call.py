"""jobs/script_call.py against a real redis-server: a script called on a connection kept for it answers as
redis-py's ``Script.__call__`` does, survives Redis losing its scripts and its connection, and never hands
a reply that came too late (or an error) to the next call."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from aitasks.jobs.script_call import ScriptConnection
from aitasks.service.redis_server import RedisServer

ANSWER = "redis.call('HSET', KEYS[1], 'n', ARGV[1]) return {1, ARGV[1], redis.call('HGETALL', KEYS[1]), false}"


@pytest.fixture
def raw(server: RedisServer) -> Iterator[redis.Redis]:
    """A client as the workers make theirs: bytes, not strings."""
    client = redis.Redis.from_url(server.url)
    yield client
    client.close()


@pytest.mark.parametrize("decoded", [True, False])
def test_it_answers_as_the_client_s_own_call(r: redis.Redis, raw: redis.Redis, decoded: bool) -> None:
    client = r if decoded else raw
    script, scripts = client.register_script(ANSWER), ScriptConnection(client)
    assert scripts.call(script, ["k"], ["7"]) == script(keys=["k"], args=["7"])
    assert scripts.call(script, ["k"], ["8"]) == ([1, "8", ["n", "8"], None] if decoded
                                                         else [1, b"8", [b"n", b"8"], None])


def test_a_script_redis_lost_is_loaded_again(r: redis.Redis) -> None:
    script, scripts = r.register_script(ANSWER), ScriptConnection(r)
    assert scripts.call(script, ["k"], ["1"])[0] == 1
    r.script_flush()
    assert scripts.call(script, ["k"], ["2"])[1] == "2"
    assert r.script_exists(script.sha) == [True]


def test_an_error_reply_is_raised_and_the_connection_goes_on(r: redis.Redis) -> None:
    failing = r.register_script("return redis.error_reply('bad fence x')")
    fine, scripts = r.register_script("return ARGV[1]"), ScriptConnection(r)
    with pytest.raises(redis.ResponseError, match="bad fence x"):
        scripts.call(failing, [], [])
    assert scripts.call(fine, [], ["next"]) == "next"


def test_a_reply_that_comes_too_late_never_answers_the_next_call(server: RedisServer) -> None:
    """A read that times out (as a Celery time limit may stop one mid-read) drops its connection: the late
    reply is not read by the next call, which gets its own."""
    client = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=0.3)
    try:
        slow = client.register_script(
            "local t0 = redis.call('TIME') "
            "repeat local t = redis.call('TIME') until (t[1] - t0[1]) * 1e6 + (t[2] - t0[2]) > 800000 "
            "return 'late'")
        fast, scripts = client.register_script("return ARGV[1]"), ScriptConnection(client)
        scripts.call(fast, [], ["warm"])
        with pytest.raises(redis.TimeoutError):
            scripts.call(slow, [], [])
        answers = set()
        for _ in range(5):  # Redis is busy with the slow script for a while: the call may wait on it
            try:
                answers.add(scripts.call(fast, [], ["mine"]))
                break
            except redis.TimeoutError:
                continue
        assert answers == {"mine"}
    finally:
        client.close()


def test_a_connection_the_server_closed_fails_one_call_and_the_next_connects_again(r: redis.Redis,
                                                                                  raw: redis.Redis) -> None:
    """(Redis restarted, or a proxy dropped the connection: the runner retries the failed call.)"""
    script, scripts = raw.register_script("return ARGV[1]"), ScriptConnection(raw)
    assert scripts.call(script, [], [b"a"]) == b"a"
    (kept,) = raw.connection_pool._in_use_connections
    kept.send_command("CLIENT", "ID")
    assert r.client_kill_filter(_id=kept.read_response()) == 1
    with pytest.raises(redis.ConnectionError):
        scripts.call(script, [], [b"b"])
    assert scripts.call(script, [], [b"c"]) == b"c"
    assert len(raw.connection_pool._in_use_connections) == 1  # the same one, connected again
