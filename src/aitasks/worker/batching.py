"""Dynamic batching of model work across the jobs running at once in one worker process.

A job type declares a batchable step with ``@batchable(name, max_batch=, max_wait_ms=)`` on a function
that maps a list of items to a list of results, one per item, in order (a model's batched call). Jobs
call ``step.run(items, check_cancel)``; one thread per process gathers the items of every job that is
waiting and calls the function once per batch of up to ``max_batch`` items.

When to run a batch: as soon as ``max_batch`` items wait, or every job that announced it will call the
step (``with step.participant():``) is waiting, or ``max_wait_ms`` after the oldest item arrived (callers
that announce nothing always get that wait). So a
job running alone (a prefork pool process runs one job at a time) never waits for company that cannot
come; several jobs in one process (``aitasks worker --pool threads``) share the model's calls.

Errors stay per job too: when a batch fails, each job's items are tried again alone, and only the job
whose items fail gets the error. Cancel stays per job: a waiting job checks its own cancel; when it stops, its items not yet in a batch
are withdrawn and never computed; a batch already running finishes for the others.

``workers``: batches computed at once, each by its own thread (a model with one copy per thread, each
on its own core: on a CPU, two one-thread calls side by side beat one two-thread call that other
threads' work keeps interrupting). The waiting items are then shared out between the idle threads.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)
I = TypeVar("I")  # noqa: E741 - an item
R = TypeVar("R")  # its result
POLL_S = 0.1  # how often a waiting job checks its cancel
_jobs_in_process = 1


def set_jobs_in_process(count: int) -> None:
    """How many jobs this process runs at once (``aitasks worker --pool threads --concurrency N`` says
    so at start; a prefork pool process runs one). Steps size their threads by it."""
    global _jobs_in_process
    _jobs_in_process = max(1, count)


def jobs_in_process() -> int:
    return _jobs_in_process


@dataclass
class _Slice(Generic[I, R]):
    """Up to ``max_batch`` items of one caller, computed in one batch."""

    items: Sequence[I]
    done: threading.Event = field(default_factory=threading.Event)
    results: Sequence[R] | None = None
    error: BaseException | None = None
    withdrawn: bool = False
    batch_size: int = 0  # the size of the batch it rode in


@dataclass
class BatchStats:
    """What the step did in this process: tests and benchmarks read it, the job result reports it."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    withdrawn: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches

    def as_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "items": self.items, "largest": self.largest,
                "withdrawn": self.withdrawn, "sizes": dict(sorted(self.sizes.items()))}


@dataclass(frozen=True)
class RunResult(Generic[R]):
    results: list[R]
    largest_batch: int  # the largest batch this caller's items were computed in


class Batcher(Generic[I, R]):
    """Collects items from concurrent callers in one process and calls ``fn`` once per batch."""

    def __init__(self, fn: Callable[[list[I]], Sequence[R]], max_batch: int = 32, max_wait_ms: float = 20.0,
                 name: str = "step", workers: int = 1) -> None:
        if max_batch < 1 or max_wait_ms < 0 or workers < 1:
            raise ValueError("max_batch and workers must be >= 1 and max_wait_ms >= 0")
        self.fn, self.max_batch, self.max_wait_s, self.name = fn, max_batch, max_wait_ms / 1000, name
        self.workers = workers
        self.stats = BatchStats()
        self._cond = threading.Condition()
        self._pending: list[_Slice[I, R]] = []
        self._oldest = 0.0
        self._participants = 0
        self._waiting_callers = 0
        self._busy = 0  # threads computing a batch
        self._due = False  # items were left behind by a batch taken when they were ready: no more waiting
        self._threads: list[threading.Thread] = []

    @contextlib.contextmanager
    def participant(self) -> Iterator[None]:
        """Announce a job that will call ``run``: while it is away (reading, OCR), a batch waits for it
        up to ``max_wait_ms``."""
        with self._cond:
            self._participants += 1
        try:
            yield
        finally:
            with self._cond:
                self._participants -= 1
                self._cond.notify_all()

    def run(self, items: Sequence[I], check_cancel: Callable[[], None] = lambda: None,
            progress: Callable[[float], None] = lambda fraction: None) -> RunResult[R]:
        """Results for ``items`` in order. ``check_cancel`` raises to stop waiting (the job's cancel):
        this caller's items not yet in a batch are then withdrawn. ``progress(fraction of items done)`` is
        called from the caller's thread while it waits (the job's own progress report)."""
        items = list(items)
        if not items:
            return RunResult([], 0)
        slices = [_Slice[I, R](items[i:i + self.max_batch]) for i in range(0, len(items), self.max_batch)]
        with self._cond:
            self._start_thread()
            if not self._pending:
                self._oldest = time.monotonic()
            self._pending.extend(slices)
            self._waiting_callers += 1
            self._cond.notify_all()
        try:
            for done, piece in enumerate(slices):
                while not piece.done.wait(POLL_S):
                    check_cancel()
                    progress(done / len(slices))
                progress((done + 1) / len(slices))
        except BaseException:
            with self._cond:
                for piece in slices:
                    piece.withdrawn = True  # the thread skips it if it has not taken it yet
            raise
        finally:
            with self._cond:
                self._waiting_callers -= 1
        results: list[R] = []
        for piece in slices:
            if piece.error is not None:
                raise piece.error
            results.extend(piece.results or ())
        return RunResult(results, max(p.batch_size for p in slices))

    # --- the batching thread -------------------------------------------------------------------------

    def _call(self, items: list[I]) -> list[R]:
        results = list(self.fn(items))
        if len(results) != len(items):
            raise RuntimeError(f"batch step {self.name} returned {len(results)} results for {len(items)} items")
        return results

    def _start_thread(self) -> None:
        """Under the lock. A forked child inherits no thread: it starts its own."""
        self._threads = [t for t in self._threads if t.is_alive()]
        while len(self._threads) < self.workers:
            thread = threading.Thread(target=self._loop, name=f"batch-{self.name}-{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _ready(self) -> bool:
        if self._due:
            return True
        count = sum(len(p.items) for p in self._pending)
        if count >= self.max_batch or time.monotonic() - self._oldest >= self.max_wait_s:
            return True
        # Every announced job is waiting: nobody else will come. (No announcements: wait out max_wait_ms.)
        return 0 < self._participants <= self._waiting_callers

    def _take(self) -> list[_Slice[I, R]]:
        """Under the lock: whole slices, oldest first, up to ``max_batch`` items (at least one slice); with
        other threads idle, this thread's share of the waiting items only, so they all get work."""
        waiting = sum(len(p.items) for p in self._pending if not p.withdrawn)
        idle = max(1, self.workers - self._busy)
        limit = min(self.max_batch, -(-waiting // idle))
        taken: list[_Slice[I, R]] = []
        count = 0
        dropped = 0
        for piece in list(self._pending):
            if piece.withdrawn:
                self._pending.remove(piece)
                dropped += len(piece.items)
                piece.done.set()
                continue
            if taken and count + len(piece.items) > limit:
                break
            self._pending.remove(piece)
            taken.append(piece)
            count += len(piece.items)
        self._oldest = time.monotonic()
        self._due = bool(self._pending)
        if self._due:
            self._cond.notify_all()  # an idle thread takes the rest at once
        if dropped:
            self.stats.withdrawn += dropped
            log.info("batch step %s: %d items of a stopped job dropped", self.name, dropped)
        return taken

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                while not self._ready():
                    self._cond.wait(max(0.001, self._oldest + self.max_wait_s - time.monotonic()))
                taken = self._take()
                self._busy += 1
            try:
                if taken:
                    self._compute(taken)
            finally:
                with self._cond:
                    self._busy -= 1

    def _compute(self, taken: list[_Slice[I, R]]) -> None:
        items = [item for piece in taken for item in piece.items]
        try:
            results = self._call(items)
        except Exception as exc:
            if len(taken) == 1:  # the caller gets the error; the thread goes on
                taken[0].error = exc
                taken[0].done.set()
                return
            # One job's items must not fail the others': each slice again alone, only a failing one fails.
            log.warning("batch step %s: a batch of %d failed (%s); its %d parts are tried one by one",
                        self.name, len(items), exc, len(taken))
            for piece in taken:
                self._compute([piece])
            return
        with self._cond:
            self.stats.batches += 1
            self.stats.items += len(items)
            self.stats.largest = max(self.stats.largest, len(items))
            self.stats.sizes[len(items)] = self.stats.sizes.get(len(items), 0) + 1
        start = 0
        for piece in taken:
            piece.results = results[start:start + len(piece.items)]
            piece.batch_size = len(items)
            start += len(piece.items)
            piece.done.set()


class BatchableStep(Generic[I, R]):
    """A declared batchable step: one ``Batcher`` per process, made on first use."""

    def __init__(self, name: str, fn: Callable[[list[I]], Sequence[R]], max_batch: int | Callable[[], int],
                 max_wait_ms: float, workers: int | Callable[[], int] = 1):
        self.name, self.fn, self.max_batch, self.max_wait_ms = name, fn, max_batch, max_wait_ms
        self.workers = workers
        self._lock = threading.Lock()
        self._batcher: tuple[int, Batcher[I, R]] | None = None

    def batcher(self) -> Batcher[I, R]:
        with self._lock:
            if self._batcher is None or self._batcher[0] != os.getpid():  # not one inherited through fork
                size = self.max_batch() if callable(self.max_batch) else self.max_batch  # (a setting, read once)
                workers = self.workers() if callable(self.workers) else self.workers
                self._batcher = (os.getpid(), Batcher(self.fn, size, self.max_wait_ms, self.name, workers))
            return self._batcher[1]

    def run(self, items: Sequence[I], check_cancel: Callable[[], None] = lambda: None,
            progress: Callable[[float], None] = lambda fraction: None) -> RunResult[R]:
        return self.batcher().run(items, check_cancel, progress)

    def participant(self) -> contextlib.AbstractContextManager[None]:
        return self.batcher().participant()

    def __call__(self, items: list[I]) -> Sequence[R]:
        """The plain, unbatched call (a baseline, or a caller that wants no batching)."""
        return self.fn(items)


STEPS: dict[str, BatchableStep[Any, Any]] = {}


def batchable(name: str, *, max_batch: int | Callable[[], int] = 32, max_wait_ms: float = 20.0,
              workers: int | Callable[[], int] = 1
              ) -> Callable[[Callable[[list[I]], Sequence[R]]], BatchableStep[I, R]]:
    """Declare ``fn(items) -> results`` (one result per item, in order) as a step that jobs in one process
    may share: see the module's docstring. ``max_batch`` and ``workers`` may be functions (a deployment's
    setting, read when the process first uses the step). Names are unique in the process."""
    if (isinstance(max_batch, int) and max_batch < 1) or max_wait_ms < 0:
        raise ValueError(f"batchable step {name!r}: max_batch must be >= 1 and max_wait_ms >= 0")

    def declare(fn: Callable[[list[I]], Sequence[R]]) -> BatchableStep[I, R]:
        if name in STEPS:
            raise ValueError(f"batchable step {name!r} declared twice")
        step = STEPS[name] = BatchableStep(name, fn, max_batch, max_wait_ms, workers)
        return step

    return declare
