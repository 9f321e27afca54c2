"""One Redis connection with many commands in flight, for the API's hottest call (accepting a job).

redis-py's asyncio client checks a connection out of its pool for every command, packs the arguments and
parses the reply in Python, and wraps each read in ``asyncio.wait_for``: about 130 µs of the API's CPU per
submit, half of all it spends (docs/benchmarks.md). Redis answers the commands of one connection in the
order they arrive, so concurrent requests can share one connection: each writes its command at once
(packed by hiredis, in C) and waits on a future that the reply parser (hiredis, in C) resolves in order.
Under load, the commands of many requests leave in one write and their replies come back in one read.

What it does not do, and why that is fine here: no TLS (``rediss://`` URLs keep using redis-py; see
``supports``), no RESP3, no pub/sub. Errors are redis-py's exception types, so the API's handlers answer
them as they answer redis-py's (503 for ConnectionError and TimeoutError). A command that was written to
the socket and then lost its reply fails with a subclass marked :class:`OutcomeUnknown`: Redis may have run
it (the submit service keeps a maybe-accepted job's inputs); one that never left fails with the plain type.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import hiredis
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


class OutcomeUnknown(Exception):
    """Marks the error of a command that was sent but got no reply: Redis may or may not have run it."""


class SentTimeout(OutcomeUnknown, RedisTimeoutError):
    pass


class SentConnectionLost(OutcomeUnknown, RedisConnectionError):
    pass


def _as_sent(error: Exception) -> Exception:
    """The same error, marked as the error of a command Redis may have run."""
    if isinstance(error, RedisTimeoutError):
        return SentTimeout(str(error))
    if isinstance(error, RedisConnectionError):
        return SentConnectionLost(str(error))
    return error


def supports(url: str) -> bool:
    """Whether this client can talk to ``url`` (plain TCP or a Unix socket; not TLS)."""
    return url.startswith(("redis://", "unix://"))


class _Protocol(asyncio.Protocol):
    """Feeds replies to the waiting futures, oldest first."""

    def __init__(self, owner: PipelinedRedis) -> None:
        self.owner = owner
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiters: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.outgoing: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, packed: bytes, future: asyncio.Future[Any]) -> None:
        """Queue a command; the commands queued in one pass of the event loop leave in one write
        (a write is a system call: one per request cost more than the command itself)."""
        if not self.outgoing:
            asyncio.get_running_loop().call_soon(self.flush)
        self.outgoing.append(packed)
        self.waiters.append((future, time.monotonic()))

    def flush(self) -> None:
        if self.outgoing and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self.outgoing))
        self.outgoing.clear()

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiters = self.waiters
        while True:
            try:
                reply = self.reader.gets()
            except hiredis.ProtocolError as exc:
                self.abort(RedisConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not waiters:  # a reply nobody asked for: the stream is out of step, start over
                self.abort(RedisConnectionError("Redis sent a reply nobody waited for"))
                return
            future, _ = waiters.popleft()
            if future.done():  # its request was cancelled (the client went away)
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(NoScriptError(str(reply)) if str(reply).startswith("NOSCRIPT") else reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"Connection to Redis lost{f': {exc}' if exc else ''}"))

    def fail(self, error: Exception) -> None:
        self.closed = True
        # The unflushed commands are the newest waiters; every older one was written and may have run.
        sent = len(self.waiters) - len(self.outgoing)
        sent_error = _as_sent(error)
        while self.waiters:
            future, _ = self.waiters.popleft()
            if not future.done():
                future.set_exception(sent_error if sent > 0 else error)
            sent -= 1
        self.owner._forget(self)

    def abort(self, error: Exception) -> None:
        self.fail(error)
        if self.transport is not None:
            self.transport.abort()


class PipelinedRedis:
    """Commands from any number of coroutines on one connection, replies matched by order.

    A command that gets no reply within ``reply_timeout_s`` fails with TimeoutError, and so does every
    command behind it on the connection, which is then dropped: the next command connects afresh.
    """

    def __init__(self, url: str, connect_timeout_s: float = 1.0, reply_timeout_s: float = 2.0) -> None:
        if not supports(url):
            raise ValueError(f"PipelinedRedis supports redis:// and unix:// URLs, not {url.split(':')[0]}://")
        self.options: dict[str, Any] = dict(parse_url(url))
        self.connect_timeout_s = connect_timeout_s
        self.reply_timeout_s = reply_timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    async def execute(self, *args: Any) -> Any:
        """Send one command (``"HGET", key, field``) and return its reply (bytes, ints, lists)."""
        protocol = self._protocol
        if protocol is None or protocol.closed:
            protocol = await self._connect()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        protocol.send(hiredis.pack_command(args), future)
        if self._watchdog is None:
            self._watchdog = loop.call_later(self.reply_timeout_s, self._check_replies)
        return await future

    async def evalsha(self, sha: str, script: str, keys: list[Any], args: list[Any]) -> Any:
        """Run a Lua script by its SHA1, loading it first when Redis does not know it (a restart flushes them)."""
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.execute("EVAL", script, len(keys), *keys, *args)

    async def aclose(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._protocol is not None:
            self._protocol.abort(RedisConnectionError("Connection closed"))

    def _forget(self, protocol: _Protocol) -> None:
        if self._protocol is protocol:
            self._protocol = None

    def _check_replies(self) -> None:
        """Fail the connection when its oldest command has waited too long; otherwise look again later."""
        self._watchdog = None
        protocol = self._protocol
        if protocol is None or not protocol.waiters:
            return
        waited = time.monotonic() - protocol.waiters[0][1]
        if waited >= self.reply_timeout_s:
            protocol.abort(RedisTimeoutError(f"Redis did not answer within {self.reply_timeout_s:g} s"))
            return
        self._watchdog = asyncio.get_running_loop().call_later(self.reply_timeout_s - waited, self._check_replies)

    async def _connect(self) -> _Protocol:
        # Concurrent callers share one connection attempt.
        connecting = self._connecting
        if connecting is None or connecting.done():
            connecting = self._connecting = asyncio.ensure_future(self._open())
        try:
            return await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        options = self.options
        try:
            if "path" in options:
                connecting = loop.create_unix_connection(lambda: _Protocol(self), options["path"])
            else:
                connecting = loop.create_connection(lambda: _Protocol(self), options.get("host", "localhost"),
                                                    int(options.get("port", 6379)))
            _, protocol = await asyncio.wait_for(connecting, self.connect_timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            raise RedisConnectionError(f"Cannot connect to Redis: {exc or 'timed out'}") from None
        hello: list[tuple[Any, ...]] = []
        if options.get("password"):
            hello.append(("AUTH", options["username"], options["password"]) if options.get("username")
                         else ("AUTH", options["password"]))
        if int(options.get("db") or 0):
            hello.append(("SELECT", int(options["db"])))
        for command in hello:  # authenticate and select before anyone else's command goes out
            future: asyncio.Future[Any] = loop.create_future()
            protocol.send(hiredis.pack_command(command), future)
            try:
                await asyncio.wait_for(future, self.reply_timeout_s)
            except BaseException:
                protocol.abort(RedisConnectionError(f"Redis refused {command[0]}"))
                raise
        self._protocol = protocol
        return protocol
