"""Fixtures: one shared deployment for most tests; fault tests build their own with ``make_stack``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from aitasks.service.redis_server import RedisServer
from broker_fixtures import BROKERS, settings_for_broker
from rabbitmq_server import RabbitServer, running_rabbitmq
from stack import Stack, running_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("stack")) as s:
        yield s


@pytest.fixture
def client(stack: Stack) -> Iterator[httpx.Client]:
    """A client of a fresh tenant, so tests never see each other's jobs."""
    with stack.client() as c:
        yield c


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server (no append-only file) for one module's tests below the API; their ``r``
    fixture flushes it before each test."""
    s = RedisServer(tmp_path_factory.mktemp("redis"), appendonly=False).start()
    yield s
    s.kill()


@pytest.fixture
def r(server: RedisServer) -> Iterator[redis.Redis]:
    """A client of ``server`` (strings, not bytes), its database emptied for each test."""
    client = redis.Redis.from_url(server.url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Start a separate deployment (own Redis) with extra settings; stopped after the test."""
    stacks: list[Stack] = []

    def make(env: dict[str, str] | None = None, **kwargs: object) -> Stack:
        s = Stack(tmp_path / f"stack{len(stacks)}", env=env, **kwargs)  # type: ignore[arg-type]
        stacks.append(s)
        s.start()
        return s

    yield make
    for s in stacks:
        s.stop()


@pytest.fixture(scope="module")
def rabbit() -> Iterator[RabbitServer]:
    """A private rabbitmq-server (tests/rabbitmq_server.py) for one module's tests, removed after them."""
    with running_rabbitmq() as server:
        yield server


@pytest.fixture(params=BROKERS)
def broker_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """A deployment's settings for this test's broker, ``[redis]`` then ``[amqp]`` (for ``make_stack``)."""
    return settings_for_broker(request)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """On failure, attach the tail of every process's log to the report."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        for name in ("stack",):
            s = item.funcargs.get(name) if hasattr(item, "funcargs") else None
            if isinstance(s, Stack):
                report.sections.append(("aitasks logs", s.logs()))
