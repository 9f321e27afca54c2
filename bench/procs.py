"""Child processes of a benchmark run: started with a log file, stopped (with their children) at the end."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from aitasks.service.logged_process import LoggedProcess

ROOT = Path(__file__).resolve().parents[1]  # the checkout: `bench` is importable from here


class Proc(LoggedProcess):
    """A benchmark's child: run from the checkout (so `bench` imports), stopped with SIGTERM then its group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        super().__init__(name, argv, env, log_dir, cwd=ROOT)

    def stop(self, timeout_s: float = 20) -> None:  # type: ignore[override]
        super().stop(signal.SIGTERM, timeout_s)


class Cleanup:
    """Things to undo at the end of a run, last first; never raises."""

    def __init__(self) -> None:
        self._undo: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, fn: Callable[[], None]) -> None:
        self._undo.append((what, fn))

    def run(self) -> None:
        while self._undo:
            what, fn = self._undo.pop()
            try:
                fn()
            except Exception as exc:  # keep stopping the rest
                print(f"  cleanup: {what}: {exc}", file=sys.stderr)


def child_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a child: ours without AITASKS_* settings, `bench` importable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AITASKS_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["AITASKS_ENABLE_DIAGNOSTIC"] = "true"  # the benchmarks run diagnostic jobs (off by default)
    # The submit benchmark queues more jobs for one tenant (no worker runs) than AITASKS_DEFAULT_MAX_QUEUED
    # allows: the throughput benchmarks measure without that limit (bench/rate_limit_bench.py measures limits).
    env["AITASKS_DEFAULT_MAX_QUEUED"] = "0"
    env.update(extra)
    return env


def wait_http(url: str, proc: Proc, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not answering {url}: {last}\n{proc.tail()}")


def quick_flag(prog: str, doc: str | None, argv: list[str] | None, help_text: str) -> bool:
    """The ``--quick`` command line of a benchmark module (its docstring as the help)."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=help_text)
    return bool(p.parse_args(argv).quick)


def in_temp_folder(prefix: str, part: Callable[[Path, Cleanup], str]) -> int:
    """Run a benchmark part that starts processes under a temporary folder, print what it renders, then
    stop everything it started and remove the folder."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    cleanup = Cleanup()
    try:
        print(part(root, cleanup))
    finally:
        cleanup.run()
        shutil.rmtree(root, ignore_errors=True)
    return 0
