"""A run's progress reports, throttled: at most one write per interval, and never a wait in the job for one.

A report made while a write is due (``interval_s`` after the last one; the runner counts the claim as one)
is written at once, in the job's thread. One made earlier waits: a thread of the pool process writes the
latest waiting report when it falls due, unless the job reports again first, or ends, in which case the
runner's end write carries what is left of it (its stage). So a job shorter than the interval writes no
progress at all, and a long one writes at most one report per interval, the last one not held back
longer than that. Each write goes through the run's fenced UPDATE (jobs/run_update.lua) and answers the
cancel flag: the job's thread raises at its next report or cancel check when a write found the run
fenced or cancelled.
"""

from __future__ import annotations

import logging
import os
import threading
import time

import redis

from aitasks.jobs.store import JobStore

log = logging.getLogger(__name__)
Report = tuple[int, str, "str | None"]

_cond = threading.Condition()  # guards every writer's pending report, and the set of waiting writers
_waiting: set[ProgressWriter] = set()
_thread_pid = 0  # the process the flushing thread runs in (a forked pool process starts its own)


class ProgressWriter:
    def __init__(self, store: JobStore, job_id: str, fence: str, interval_s: float, last_write: float):
        self._store = store
        self._job_id = job_id
        self._fence = fence
        self._interval = interval_s
        self._due = last_write + interval_s  # time.monotonic() from which a write may go
        self._pending: Report | None = None
        self._closed = False
        self._writing = threading.Lock()  # held while a write is in flight
        self.fenced = False  # a write found that this run lost the job
        self.cancelled = False  # a write found a cancel asked for

    def report(self, value: int, message: str, stage: str | None) -> bool:
        """Keep the report; write it now if a write is due. True when written here (the cancel flag read)."""
        with _cond:
            if self._closed:
                return False
            self._pending = (value, message, stage)
            if time.monotonic() < self._due:
                _waiting.add(self)
                _start_thread()
                _cond.notify()
                return False
            report = self._take()
        self._write(report)
        return True

    def flush(self) -> None:
        """Write the waiting report now, in the calling thread."""
        with _cond:
            if self._closed or self._pending is None:
                return
            report = self._take()
        self._write(report)

    def close(self) -> Report | None:
        """No more writes (one in flight is waited for); returns the report never written, if any."""
        with _cond:
            self._closed = True
            _waiting.discard(self)
            report, self._pending = self._pending, None
        with self._writing:
            pass
        return report

    def _take(self) -> Report:
        """(Under _cond.) The pending report, with the write lock held: no close() slips in between."""
        report = self._pending
        assert report is not None
        self._pending = None
        self._due = time.monotonic() + self._interval
        self._writing.acquire()
        return report

    def _write(self, report: Report) -> None:
        """(With the write lock held, released here.)"""
        value, message, stage = report
        try:
            applied, cancel = self._store.run_update(
                self._job_id, {"progress": value, "message": message, "stage": stage or ""}, self._fence)
            self.fenced = self.fenced or applied == -2
            self.cancelled = self.cancelled or cancel
        except redis.RedisError as exc:
            log.warning("progress of job %s not recorded: %s", self._job_id, exc)
        finally:
            self._writing.release()


def _start_thread() -> None:
    """(Under _cond.) The flushing thread of this process, started once (after a fork too)."""
    global _thread_pid
    if _thread_pid != os.getpid():
        _thread_pid = os.getpid()
        threading.Thread(target=_flush_due, name="aitasks-progress", daemon=True).start()


def _flush_due() -> None:
    while True:
        with _cond:
            now = time.monotonic()
            waiting = [w for w in _waiting if w._pending is not None]
            due = [w for w in waiting if w._due <= now]
            if not due:
                _cond.wait(min((w._due - now for w in waiting), default=None))
                continue
            writer = due[0]
            report = writer._take()
        writer._write(report)
