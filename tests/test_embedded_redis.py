"""The private Redis `aitasks run` starts (docs/security.md, item 8): a password, no CONFIG/DEBUG/MODULE,
a memory cap that answers 503 when reached; and webhook secrets that reading Redis does not reveal.
(`aitasks run` itself, and its Redis restarted after a SIGKILL: tests/test_cli_run.py.)"""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from aitasks.errors import ConfigurationError
from aitasks.jobs import keys
from aitasks.jobs.secret_key import secret_key
from aitasks.jobs.webhooks import rotate_secret, tenant_secret
from aitasks.service.redis_server import RedisServer
from aitasks.settings import Settings
from stack import Stack, submit, wait_status


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def protected(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=False, protected=True).start()
    yield server
    server.stop()


def stranger(port: int, password: str | None = None) -> redis.Redis:
    """A client without the password (and without redis-py's retries of a refused connection)."""
    return redis.Redis(port=port, password=password, retry=Retry(NoBackoff(), 0))


def test_the_protected_server_wants_its_password_and_lacks_config_debug_module(protected: RedisServer) -> None:
    with pytest.raises(redis.AuthenticationError):
        stranger(protected.port).ping()
    with pytest.raises(redis.AuthenticationError):
        stranger(protected.port, password="guess").ping()
    # What item 8 is about: nobody without the password may mint a key for any tenant.
    with pytest.raises(redis.AuthenticationError):
        stranger(protected.port).hset("aitasks:apikey:x", "tenant", "victim")
    r = redis.Redis.from_url(protected.url)
    assert r.ping()
    for command in (("CONFIG", "GET", "requirepass"), ("CONFIG", "SET", "requirepass", ""),
                    ("DEBUG", "SLEEP", "0"), ("MODULE", "LIST")):
        with pytest.raises(redis.ResponseError, match="unknown command"):
            r.execute_command(*command)
    # Its secrets are its owner's alone, and the password is not on the command line (/proc is public).
    assert protected.password and protected.password in protected.url
    assert mode(protected.data_dir) == 0o700
    for name in ("password", "redis.conf"):
        assert mode(protected.data_dir / name) == 0o600
    assert protected.proc is not None
    assert protected.password not in Path(f"/proc/{protected.proc.pid}/cmdline").read_text()


def test_a_restarted_protected_server_keeps_its_password(protected: RedisServer) -> None:
    url = protected.url
    protected.kill()
    assert protected.start().url == url
    assert redis.Redis.from_url(url).ping()


def test_an_open_test_server_keeps_every_command(tmp_path: Path) -> None:
    """The tests' own servers (not `aitasks run`'s) stay open: some reconfigure them (test_pipelined)."""
    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    try:
        assert server.password is None and server.url == f"redis://127.0.0.1:{server.port}/0"
        assert redis.Redis(port=server.port).config_get("maxmemory") == {"maxmemory": "0"}
    finally:
        server.stop()


def test_the_secret_key_file_is_made_once_and_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var")
    key = secret_key(settings)
    assert len(key) >= 40 and secret_key(settings) == key
    assert mode(settings.secret_key_file) == 0o600
    assert secret_key(Settings(data_dir=tmp_path / "var", secret_key="shared-by-all-hosts")) == b"shared-by-all-hosts"


def test_redis_holds_no_webhook_secret_and_rotation_and_a_wrong_key_are_handled(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=False).start()
    try:
        r = redis.Redis(port=server.port)
        secret = tenant_secret(r, "acme", key=b"k1")
        assert secret.startswith("whsec_") and len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
        assert tenant_secret(r, "acme", key=b"k1") == secret  # stable
        assert tenant_secret(r, "other", key=b"k1") != secret
        stored = r.get(keys.webhook_secret("acme"))
        assert stored is not None and secret.encode() not in stored
        assert secret.removeprefix("whsec_").encode() not in stored
        # Everything Redis holds, dumped, does not contain it.
        everything = b"".join(r.dump(k) or b"" for k in r.keys("*"))
        assert secret.removeprefix("whsec_").encode() not in everything

        rotated = rotate_secret(r, "acme", key=b"k1")
        assert rotated != secret and tenant_secret(r, "acme", key=b"k1") == rotated
        # A process with another key fails loudly rather than sign with a secret no receiver has.
        with pytest.raises(ConfigurationError, match="AITASKS_SECRET_KEY"):
            tenant_secret(r, "acme", key=b"k2")
        # A secret an older version stored in clear is replaced by a derived one on first use.
        r.set(keys.webhook_secret("legacy"), "whsec_" + base64.b64encode(b"x" * 32).decode())
        derived = tenant_secret(r, "legacy", key=b"k1")
        assert derived != "whsec_" + base64.b64encode(b"x" * 32).decode()
        assert b"whsec_" not in (r.get(keys.webhook_secret("legacy")) or b"")
    finally:
        server.stop()


@pytest.mark.slow  # the CLI as a process
def test_the_cli_prints_the_secret_redis_does_not_hold(stack: Stack) -> None:
    """tests/test_webhooks.py checks a real delivery verifies with the secret this command prints."""
    tenant = f"secret-{os.getpid()}"
    out = subprocess.run([sys.executable, "-m", "aitasks.cli.main", "keys", "secret", "--tenant", tenant],
                         env=stack.env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    secret = out.stdout.strip()
    assert secret.startswith("whsec_")
    stored = stack.redis.get(keys.webhook_secret(tenant))
    assert stored is not None and secret.removeprefix("whsec_").encode() not in stored


def fill(r: redis.Redis) -> list[str]:
    """Write until Redis refuses, in ever smaller values: a refused big value leaves room for a job
    (its own buffer is freed), a refused 64 bytes does not."""
    names: list[str] = []
    for size in (512 * 1024, 16 * 1024, 512, 64):
        with pytest.raises(redis.OutOfMemoryError):
            for _ in range(10_000):
                names.append(f"fill:{len(names)}")
                r.set(names[-1], b"x" * size)
    return names


@pytest.mark.slow  # its own stack
def test_a_full_redis_answers_503_naming_memory_then_accepts_again(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "capped", appendonly=False, protected=True,
                         maxmemory_bytes=24 * 1024 * 1024).start()
    s = Stack(tmp_path / "stack", redis_server=server)
    try:
        s.start()
        r = s.redis
        assert r.info("memory")["maxmemory_policy"] == "noeviction"
        with s.client() as c:
            assert wait_status(c, submit(c))["status"] == "SUCCESS"  # scripts loaded, workers idle
            filled = fill(r)
            # The fill leaves Redis a few bytes over its limit, and any hundred bytes freed meanwhile (a
            # client's buffer) lets the next write in: hold a megabyte of unfinished command in a client's
            # query buffer (counted as used memory) so Redis is well over while the submit is tried.
            hog = r.connection_pool.get_connection()
            hog.send_packed_command([b"*3\r\n$3\r\nSET\r\n$3\r\nhog\r\n$4000000\r\n" + b"x" * 1_000_000])
            time.sleep(0.2)
            answer = c.post("/api/v1/tasks/submit/", json={"task_type": "diagnostic"})
            hog.disconnect()
            assert answer.status_code == 503, answer.text
            assert "out of memory" in answer.json()["error"] and answer.json()["code"] == "unavailable"
            assert answer.headers["Retry-After"]
            r.delete(*filled)
            submit(c)  # room again: accepted
    finally:
        s.stop()
        server.stop()
