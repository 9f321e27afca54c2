"""A private RabbitMQ for tests: Debian's ``rabbitmq-server`` on free 127.0.0.1 ports, its own node name,
data, logs, config, plugins file (none: no management plugin), Erlang cookie (a private HOME) and its own
epmd (``ERL_EPMD_PORT``), so it never meets a RabbitMQ or epmd the machine runs. Stopped and removed
afterwards; ``restart()`` keeps its data (quorum queues are durable) and its ports.

Started through ``/usr/lib/rabbitmq/bin/rabbitmq-server``, the script the packaged wrapper runs as the
``rabbitmq`` user: run directly it runs as the caller and ``exec``s the Erlang VM, so the process we
start is the broker itself (SIGTERM stops it cleanly). ``scripts/ensure-rabbitmq.sh`` installs the package.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aitasks.service.redis_server import free_port, write_private

SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def available() -> bool:
    return SCRIPT.exists() and shutil.which("erl") is not None


class RabbitServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"aitasks-test-{uuid.uuid4().hex[:8]}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def _env(self) -> dict[str, str]:
        r = self.root
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(r), "LANG": "C.UTF-8",
            "RABBITMQ_CONF_ENV_FILE": "/dev/null",  # not /etc/rabbitmq/rabbitmq-env.conf
            "RABBITMQ_CONFIG_FILE": str(r / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(r / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(r / "mnesia"), "RABBITMQ_LOG_BASE": str(r / "log"),
            "RABBITMQ_NODENAME": self.node, "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port), "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port), "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_PID_FILE": str(r / "rabbitmq.pid"),
        }

    def _write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "rabbitmq.conf").write_text("\n".join([
            f"listeners.tcp.default = 127.0.0.1:{self.port}",
            "loopback_users = none",  # guest from 127.0.0.1 (the default allows it; said plainly)
            "disk_free_limit.absolute = 20MB",
            "log.console = true", "log.console.level = warning", "log.file.level = info",
            # A job may hold its message for its whole hard time limit (late acknowledgement).
            "consumer_timeout = 3600000",
        ]) + "\n")
        (self.root / "enabled_plugins").write_text("[].\n")
        cookie = self.root / ".erlang.cookie"
        if not cookie.exists():
            write_private(cookie, secrets.token_hex(16))
            os.chmod(cookie, 0o400)

    def start(self, timeout_s: float = 60.0) -> RabbitServer:
        if not available():
            raise RuntimeError("rabbitmq-server not installed: run scripts/ensure-rabbitmq.sh "
                               "(apt-get install rabbitmq-server)")
        self._write_config()
        with open(self.root / "server.out", "ab") as out:
            self.proc = subprocess.Popen([str(SCRIPT)], env=self._env(), cwd=self.root, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not self.answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"rabbitmq-server did not start on port {self.port}:\n{self.logs()}")
            time.sleep(0.2)
        return self

    def answers(self) -> bool:
        """An AMQP connection opens (the TCP listener comes up only once the broker has booted)."""
        from kombu import Connection

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
            with Connection(self.url, connect_timeout=2) as c:
                c.connect()
            return True
        except Exception:
            return False

    def stop(self, timeout_s: float = 30.0) -> None:
        """A clean shutdown (SIGTERM), the Erlang VM killed if it takes too long."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the broker and its private epmd (which daemonizes, out of our process group)."""
        self.stop()
        subprocess.run(["epmd", "-kill"], env=self._env(), capture_output=True, timeout=10, check=False)

    def logs(self) -> str:
        parts = []
        for path in [self.root / "server.out", *sorted((self.root / "log").glob("*.log"))]:
            if path.exists():
                parts.append(f"--- {path.name} ---\n" + path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)


@contextmanager
def running_rabbitmq() -> Iterator[RabbitServer]:
    """A started private broker; stopped, its epmd ended and its folder removed on the way out."""
    root = Path(tempfile.mkdtemp(prefix="aitasks-rabbitmq-"))
    server = RabbitServer(root)
    try:
        yield server.start()
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)
