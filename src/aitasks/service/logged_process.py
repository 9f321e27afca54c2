"""A child process in its own session with its output in a log file: how the test suite and the
benchmarks run the API, workers and baselines, and stop them (with whatever they started) afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path


class LoggedProcess:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path, cwd: Path | None = None):
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._group_killed = False

    def start(self) -> LoggedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._group_killed = False
        with open(self.log_path, "ab") as log:
            # Its own session, so its process group holds exactly what it starts (a prefork pool).
            self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
        """Ask it to stop with ``sig``; after ``timeout_s`` SIGKILL its process group. Leftovers of the group
        (pool processes) are killed too, once: a group id reused since is never signalled."""
        if self.proc is None:
            return
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        if not self._group_killed:
            self.kill_group()

    def kill_group(self) -> None:
        """SIGKILL the process and everything in its session (a worker with its pool)."""
        if self.proc is None:
            return
        self._group_killed = True
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def children(self) -> list[int]:
        """Pids of the direct children that are a prefork worker's pool processes (not its job-history
        recorder, store/worker_hook.py, which is a child too)."""
        try:
            out = subprocess.run(["pgrep", "-P", str(self.pid)], capture_output=True, text=True).stdout
        except FileNotFoundError:
            return []
        return [int(p) for p in out.split() if not _is_recorder(int(p))]

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def _is_recorder(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"aitasks.store.recorder" in f.read()
    except OSError:  # gone meanwhile
        return False
