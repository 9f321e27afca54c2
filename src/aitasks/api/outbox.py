"""The API's durable outbox: submits accepted while Redis cannot be reached, kept on local disk until sent.

One SQLite file per API process, in WAL mode with ``synchronous=FULL``: a submit answered ``202`` from the
outbox has been fsynced first, so it survives the API process being killed (and the machine losing power).
SQLite rather than an append-only file because the outbox is read as well as appended to: by job id (the
status of an outboxed job), by tenant + idempotency key (a resent submit gets its first job), oldest first
(the forwarder), and rows leave one by one once forwarded; a log file would need its own index and
compaction for that.

Which file: ``<data_dir>/outbox/outbox-<instance>-<slot>.sqlite3``; ``instance`` is AITASKS_API_INSTANCE, or
``port<AITASKS_PORT>``; ``slot`` is the first whose lock file this process can lock (``flock``, released by
the kernel when the process dies). So uvicorn's several workers of one instance take slots 0, 1, …, never
one file twice, and a restarted API takes the slot its predecessor left, with what it had not forwarded.
Files no live process holds (a worker count lowered) are adopted and drained by any API (``orphans``).

Every SQLite call runs on the outbox's one thread (the event loop never waits on an fsync).
"""

from __future__ import annotations

import asyncio
import fcntl
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

import orjson

from aitasks.jobs.models import Job

T = TypeVar("T")
ROW_OVERHEAD = 256  # bytes counted per row beyond its text: SQLite's page and index share, roughly
MAX_SLOTS = 256

SCHEMA = """
CREATE TABLE IF NOT EXISTS submits (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    idem TEXT,
    record TEXT NOT NULL,
    message TEXT NOT NULL,
    pending_ttl_s INTEGER NOT NULL,
    idem_ttl_s INTEGER NOT NULL,
    files INTEGER NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS submits_idem ON submits (tenant, idem) WHERE idem IS NOT NULL;
"""
COLUMNS = "seq, record, message, pending_ttl_s, idem, idem_ttl_s, files, size"


class OutboxFull(Exception):
    """The outbox holds its maximum (AITASKS_OUTBOX_MAX_MB)."""


@dataclass(frozen=True)
class Entry:
    """One outboxed submit: what the CREATE script needs to accept it later, exactly as it would have."""

    seq: int
    job: Job
    message: str  # the Celery message
    pending_ttl_s: int
    idem: str | None  # the idempotency key's digest
    idem_ttl_s: int
    files: bool  # it has input files in the artifact store (kept fresh against the workers' sweep)
    size: int


def _entry(row: tuple[Any, ...]) -> Entry:
    seq, record, message, pending_ttl_s, idem, idem_ttl_s, files, size = row
    return Entry(seq, Job.from_hash(orjson.loads(record)), message, pending_ttl_s, idem, idem_ttl_s, bool(files),
                 size)


class OutboxFile:
    """One locked SQLite outbox file. Used only from the owning Outbox's thread."""

    def __init__(self, path: Path, lock: IO[bytes]):
        self.path = path
        self._lock = lock
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a commit is on disk before the 202 leaves
        self.db.executescript(SCHEMA)
        count, size = self.db.execute("SELECT count(*), coalesce(sum(size), 0) FROM submits").fetchone()
        self.count: int = count
        self.size: int = size

    @staticmethod
    def lock(path: Path) -> OutboxFile | None:
        """The file at ``path``, locked for this process; None when another live process holds it."""
        handle = open(path.with_suffix(".lock"), "ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return OutboxFile(path, handle)

    def add(self, job: Job, message: str, pending_ttl_s: int, idem: str | None, idem_ttl_s: int, files: bool,
            max_bytes: int) -> None:
        record = orjson.dumps(job.to_hash()).decode()
        size = len(record) + len(message) + ROW_OVERHEAD
        if self.size + size > max_bytes:
            raise OutboxFull(f"the outbox holds {self.size / 1e6:.1f} MB of its {max_bytes / 1e6:g} MB")
        added = self.db.execute(  # OR IGNORE: the same job twice (a resent outcome unknown) is one row
            "INSERT OR IGNORE INTO submits (job_id, tenant, idem, record, message, pending_ttl_s, idem_ttl_s, "
            "files, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (job.id, job.tenant, idem, record, message, pending_ttl_s, idem_ttl_s, int(files), size)).rowcount
        if added:
            self.count += 1
            self.size += size

    def find(self, job_id: str) -> Entry | None:
        row = self.db.execute(f"SELECT {COLUMNS} FROM submits WHERE job_id = ?", (job_id,)).fetchone()
        return _entry(row) if row else None

    def find_key(self, tenant: str, idem: str) -> Entry | None:
        row = self.db.execute(f"SELECT {COLUMNS} FROM submits WHERE tenant = ? AND idem = ? ORDER BY seq LIMIT 1",
                              (tenant, idem)).fetchone()
        return _entry(row) if row else None

    def oldest(self, n: int) -> list[Entry]:
        return [_entry(r) for r in self.db.execute(f"SELECT {COLUMNS} FROM submits ORDER BY seq LIMIT ?", (n,))]

    def with_files(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT job_id FROM submits WHERE files = 1")]

    def remove(self, entries: list[Entry]) -> None:
        """Forget forwarded submits, in one transaction (one fsync for a batch)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            for entry in entries:
                if self.db.execute("DELETE FROM submits WHERE seq = ?", (entry.seq,)).rowcount:
                    self.count -= 1
                    self.size -= entry.size
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        if self.count == 0:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL does not keep the outage's pages

    def close(self) -> None:
        self.db.close()
        self._lock.close()


class Outbox:
    """This API process's outbox file (and any orphaned ones it adopts), behind one thread."""

    def __init__(self, directory: Path, instance: str, max_bytes: int):
        self.directory = directory
        self.max_bytes = max_bytes
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="outbox")
        directory.mkdir(parents=True, exist_ok=True)
        mine = None
        for slot in range(MAX_SLOTS):
            mine = OutboxFile.lock(directory / f"outbox-{instance}-{slot}.sqlite3")
            if mine is not None:
                break
        if mine is None:
            raise RuntimeError(f"no free outbox slot for instance {instance!r} in {directory}")
        self.file = mine

    @property
    def count(self) -> int:
        """Submits waiting (read without the thread: an int, written only by the thread)."""
        return self.file.count

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def add(self, job: Job, message: str, pending_ttl_s: int, idem: str | None, idem_ttl_s: int,
                  files: bool) -> None:
        """Store a submit durably (fsynced when this returns). Raises OutboxFull."""
        await self._run(self.file.add, job, message, pending_ttl_s, idem, idem_ttl_s, files, self.max_bytes)

    async def find(self, job_id: str) -> Entry | None:
        return await self._run(self.file.find, job_id) if self.file.count else None

    async def find_key(self, tenant: str, idem: str) -> Entry | None:
        return await self._run(self.file.find_key, tenant, idem) if self.file.count else None

    async def oldest(self, file: OutboxFile, n: int) -> list[Entry]:
        return await self._run(file.oldest, n)

    async def remove(self, file: OutboxFile, entries: list[Entry]) -> None:
        await self._run(file.remove, entries)

    async def with_files(self, file: OutboxFile) -> list[str]:
        return await self._run(file.with_files)

    async def orphans(self) -> list[OutboxFile]:
        """Non-empty outbox files no live process holds, locked for this one (close them when drained)."""
        def adopt() -> list[OutboxFile]:
            found = []
            for path in sorted(self.directory.glob("outbox-*.sqlite3")):
                if path == self.file.path or path.stat().st_size == 0:
                    continue
                file = OutboxFile.lock(path)
                if file is None:
                    continue
                if file.count:
                    found.append(file)
                else:
                    file.close()
            return found
        return await self._run(adopt)

    async def close_file(self, file: OutboxFile) -> None:
        await self._run(file.close)

    def close(self) -> None:
        self._thread.submit(self.file.close).result()
        self._thread.shutdown()
