"""Registered scripts called on one connection of their own, without the client's command layer.

A pool process makes two script calls a job (START and the end, jobs/run_scripts.py). redis-py's
``Script.__call__`` goes through the client's whole command path: a connection taken from the pool and
checked for unread data (a poll syscall), its retry wrapper, observability hooks, response callbacks, the
connection given back. Writing the command on a connection kept for the purpose and reading its reply costs
~65 µs less CPU per call on this project's reference machine (``bench/script_cost.py``), a tenth of the
pool's CPU for a no-op job.

The connection keeps what matters: its health check before a send when it sat idle (the client's
``health_check_interval``), and it closes itself on any error while sending or reading (even a time limit
raised mid-read), so a half-read reply never reaches the next call; the next call connects again.
Connection errors are raised as they come: the runner retries them (worker/redis_outage.py), as it did
around ``Script.__call__``. A lock keeps the calls of the job's thread and of the progress writer
(worker/progress.py) apart.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import redis
from redis.commands.core import Script
from redis.connection import AbstractConnection
from redis.exceptions import NoScriptError


class ScriptConnection:
    """One connection of ``client``'s pool, taken at the first call and kept (``client.close()`` closes
    it with the pool's others); a forked child takes its own."""

    def __init__(self, client: redis.Redis):
        self._client = client
        self._conn: AbstractConnection | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    def call(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """EVALSHA of ``script``; loaded first when Redis lost it (a restart without its append-only file,
        SCRIPT FLUSH)."""
        with self._lock:
            if self._conn is None or self._pid != os.getpid():
                self._conn, self._pid = self._client.connection_pool.get_connection(), os.getpid()
            conn = self._conn
            try:
                conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
                return conn.read_response()
            except NoScriptError:
                conn.send_command("SCRIPT", "LOAD", script.script)
                sha = conn.read_response()
                script.sha = sha.decode() if isinstance(sha, bytes) else sha
                conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
                return conn.read_response()
