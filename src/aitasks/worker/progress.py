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

# The flushing thread looks for due reports every POLL_S while reports come, so a job hands it one without
# waking it (a wake-up per job cost a GIL hand-over in every short job); after IDLE_S without any it
# sleeps until notified.
POLL_S = 0.1
IDLE_S = 10.0

_cond = threading.Condition()  # guards every writer's pending report, the set of waiting writers, the flags
_waiting: set[ProgressWriter] = set()
_thread_pid = 0  # the process the flushing thread runs in (a forked pool process starts its own)
_asleep = True  # the flushing thread is not started in this process, or waits for a notify


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
                _wake()
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


def _wake() -> None:
    """(Under _cond.) The flushing thread of this process started (once, after a fork too) or woken when
    it sleeps; while it polls, nothing."""
    global _thread_pid, _asleep
    if _thread_pid != os.getpid():
        _thread_pid = os.getpid()
        _asleep = False
        threading.Thread(target=_flush_due, name="aitasks-progress", daemon=True).start()
    elif _asleep:
        _asleep = False
        _cond.notify()


def _flush_due() -> None:
    global _asleep
    busy = time.monotonic()  # when a writer last waited
    while True:
        with _cond:
            now = time.monotonic()
            waiting = [w for w in _waiting if w._pending is not None]
            due = [w for w in waiting if w._due <= now]
            if not due:
                if _waiting:
                    busy = now
                if waiting:
                    _cond.wait(min(w._due for w in waiting) - now)
                elif now - busy < IDLE_S:
                    _cond.wait(POLL_S)
                else:
                    _asleep = True
                    _cond.wait()
                    busy = time.monotonic()
                continue
            writer = due[0]
            report = writer._take()
        writer._write(report)
