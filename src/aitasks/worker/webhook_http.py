"""The webhook sender's HTTP client: it reaches only addresses the guard allows, within a deadline, reading
at most a few KiB of the answer.

The host is resolved once per connection; every address it resolves to must pass jobs/net_guard.py (and
not be the service's own Redis), and the socket connects to that checked IP, so a second DNS answer
(rebinding) cannot move it. httpx still sends the URL's Host header and, for https, its name as SNI and
for certificate checks. Each attempt (``attempt()``) has one total deadline over resolving, connecting,
sending and reading, however slowly the receiver drips bytes, and a cap on the bytes read.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

import httpcore
import httpx

from aitasks.jobs.net_guard import IPAddress, Network, refusal, same_endpoint

MAX_RESPONSE_BYTES = 64 * 1024
Resolver = Callable[[str, int], list[IPAddress]]


class Refused(Exception):
    """The receiver's address is one webhooks may not reach (not retried)."""


class TooLarge(Exception):
    """The receiver sent more than MAX_RESPONSE_BYTES."""


@dataclass
class _Attempt:
    deadline: float
    budget: int  # bytes still allowed


_current = threading.local()  # the attempt the calling sender thread is making


def _remaining(timeout: float | None, kind: type[Exception]) -> float:
    """The smaller of an operation's own timeout and what is left of the attempt's deadline."""
    att: _Attempt | None = getattr(_current, "attempt", None)
    if att is None:
        return timeout if timeout is not None else 30.0
    left = att.deadline - time.monotonic()
    if left <= 0:
        raise kind("the attempt's deadline passed")
    return min(left, timeout) if timeout is not None else left


def system_resolver(host: str, port: int) -> list[IPAddress]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ip_address(str(info[4][0]).split("%")[0]) for info in infos))


class _Stream(httpcore.NetworkStream):
    """A socket stream whose reads and writes stop at the attempt's deadline and byte budget."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self.inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        att: _Attempt | None = getattr(_current, "attempt", None)
        if att is not None and att.budget <= 0:
            raise TooLarge(f"the answer is over {MAX_RESPONSE_BYTES} bytes")
        limit = min(max_bytes, att.budget) if att is not None else max_bytes
        data = self.inner.read(limit, _remaining(timeout, httpcore.ReadTimeout))
        if att is not None:
            att.budget -= len(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, _remaining(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self.inner.start_tls(ssl_context, server_hostname, _remaining(timeout, httpcore.ConnectTimeout)))

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """Resolve once, check every answer, connect to a checked IP."""

    def __init__(self, allowed: Iterable[Network], forbidden: Iterable[tuple[IPAddress, int]] = (),
                 resolver: Resolver = system_resolver) -> None:
        self.allowed = tuple(allowed)
        self.forbidden = tuple(forbidden)
        self.resolver = resolver
        self.lookups = ThreadPoolExecutor(4, thread_name_prefix="aitasks-webhook-dns")  # to bound a slow DNS
        self.inner = httpcore.SyncBackend()

    def resolve(self, host: str, port: int, timeout: float | None) -> list[IPAddress]:
        try:
            return self.lookups.submit(self.resolver, host, port).result(_remaining(timeout, httpcore.ConnectTimeout))
        except FutureTimeout:
            raise httpcore.ConnectTimeout(f"resolving {host} took too long") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"{host} does not resolve: {exc}") from None

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        addresses = self.resolve(host, port, timeout)
        for addr in addresses:
            reason = refusal(addr, self.allowed)
            if reason:
                raise Refused(f"{host} resolves to {addr}, {reason}")
            if same_endpoint(addr, port, self.forbidden):
                raise Refused(f"{host}:{port} is the service's own Redis")
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for addr in addresses:
            try:
                stream = self.inner.connect_tcp(str(addr), port, _remaining(timeout, httpcore.ConnectTimeout),
                                                local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            return _Stream(stream)
        raise error

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise Refused("webhooks go over TCP only")


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport over a GuardedBackend; no proxy (a proxy would connect on our behalf)."""

    def __init__(self, backend: GuardedBackend, max_connections: int) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False), max_connections=max_connections,
            max_keepalive_connections=max_connections, keepalive_expiry=5.0, network_backend=backend)


def client(backend: GuardedBackend, max_connections: int) -> httpx.Client:
    return httpx.Client(transport=GuardedTransport(backend, max_connections), follow_redirects=False,
                        trust_env=False, headers={"User-Agent": "aitasks-webhooks/1",
                                                  "Content-Type": "application/json"})


@contextmanager
def attempt(deadline_s: float) -> Iterator[None]:
    """One delivery attempt in this thread: every socket operation inside stops at the deadline."""
    _current.attempt = _Attempt(time.monotonic() + deadline_s, MAX_RESPONSE_BYTES)
    try:
        yield
    finally:
        _current.attempt = None


def post(http: httpx.Client, url: str, body: bytes, headers: dict[str, str], deadline_s: float) -> int:
    """POST and return the status code; reads at most MAX_RESPONSE_BYTES of the answer, then closes.
    Raises httpx.HTTPError (retried), Refused or TooLarge (not retried)."""
    with attempt(deadline_s):
        timeout = httpx.Timeout(deadline_s)
        with http.stream("POST", url, content=body, headers=headers, timeout=timeout) as r:
            try:
                for _ in r.iter_raw():  # drained (up to the cap) so the connection can be reused
                    pass
            except (TooLarge, httpx.TimeoutException):
                pass  # the status is known; the rest of the body does not matter
            return r.status_code
