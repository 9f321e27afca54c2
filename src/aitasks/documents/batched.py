"""The shared steps of document ingestion (worker/batching.py): the chunks of every ingestion job
running in this process at once go through the model together, and their documents into the store in
one commit.

Measured on 2 CPU cores (docs/benchmarks.md): the model gains little from a larger batch (~60 ms of
CPU a 160-token chunk whatever the batch), but a two-thread torch call loses much of its time
whenever another thread (a job reading, chunking, writing) takes one of its cores. So a threads worker
makes one-thread calls side by side, each on its own copy of the model, one per core. LanceDB's write
costs a table version and a merge over the table per commit (~50 ms a document on a table of a few
hundred), almost nothing per row: one commit for the documents of every job that reached the store
step together costs about what one did.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from aitasks.documents import service
from aitasks.documents.store import DocumentWrite, VectorStore
from aitasks.settings import get_settings
from aitasks.worker.batching import RunResult, batchable, jobs_in_process

MAX_WAIT_MS = 25.0
STORE_MAX_BATCH = 32  # documents in one commit: one run of a threads worker's jobs (--concurrency 8) fits
_torch_set = threading.Lock()


def max_batch() -> int:
    """AITASKS_EMBEDDING_MAX_BATCH (16: on 2 cores 8-16 chunks a call ran faster than 32, less padding)."""
    return get_settings().embedding_max_batch


def parallel_calls() -> int:
    """Model calls at once in this process: 1 where one job runs at a time (prefork: today's call,
    torch's threads untouched); with several jobs, AITASKS_EMBEDDING_PARALLEL_CALLS or one per core
    (at most 4), each call then on cores/N torch threads."""
    if jobs_in_process() <= 1:
        return 1
    cores = len(os.sched_getaffinity(0))
    calls = get_settings().embedding_parallel_calls or min(cores, 4)
    with _torch_set:
        import torch

        # Process-wide: N calls x cores/N threads fill the cores without torch's threads spinning at
        # barriers while the jobs' own threads hold a core (measured: 5x the CPU per chunk under load).
        torch.set_num_threads(max(1, cores // calls))
    return calls


@batchable("document_embedding", max_batch=max_batch, max_wait_ms=MAX_WAIT_MS, workers=parallel_calls)
def embed_chunks(texts: list[str]) -> Sequence[np.ndarray]:
    """Unit-length vectors for chunk texts, with this thread's copy of the process's model."""
    return list(service.embedder(get_settings()).thread_replica().encode(texts, batch_size=len(texts)))


@dataclass(frozen=True)
class _Stored:
    """One write's outcome: what the job raises, or the chunks stored."""

    count: int = 0
    error: Exception | None = None


@batchable("document_store", max_batch=STORE_MAX_BATCH, max_wait_ms=MAX_WAIT_MS)
def store_documents(writes: list[tuple[VectorStore, DocumentWrite]]) -> Sequence[_Stored]:
    """One commit per store for the documents of the jobs that reached this step together; a write that
    fails fails alone (``VectorStore.replace_documents``)."""
    outcomes: list[_Stored] = [_Stored()] * len(writes)
    stores: dict[int, list[int]] = {}
    for i, (store, _) in enumerate(writes):
        stores.setdefault(id(store), []).append(i)
    for positions in stores.values():
        store = writes[positions[0]][0]
        done = store.replace_documents([writes[i][1] for i in positions])
        for i, outcome in zip(positions, done, strict=True):
            outcomes[i] = _Stored(error=outcome) if isinstance(outcome, Exception) else _Stored(count=outcome)
    return outcomes


class BatchedEncode:
    """``pipeline.ingest_document``'s ``encode`` and ``write`` hooks: a job's chunks through the shared
    embedding step and, where several jobs run in the process, its document through the shared store
    step. Used as a context around the job: it announces the job to each step until it is done with it
    (so a batch waits for it only while it may still come), and remembers the largest embedding batch
    its chunks rode in."""

    def __init__(self) -> None:
        self.largest_batch = 0
        self.largest_write = 0
        self._embedding = contextlib.ExitStack()
        self._storing = contextlib.ExitStack()
        self.write: Callable[[VectorStore, DocumentWrite], int] | None = (
            self._write if jobs_in_process() > 1 else None)  # alone: the store's own call, no thread hop

    def __enter__(self) -> BatchedEncode:
        self._embedding.enter_context(embed_chunks.participant())
        if self.write is not None:
            self._storing.enter_context(store_documents.participant())
        return self

    def __exit__(self, *exc: object) -> None:
        self._embedding.close()
        self._storing.close()

    def __call__(self, texts: list[str], check_cancel: Callable[[], None],
                 progress: Callable[[float], None] = lambda fraction: None) -> np.ndarray:
        try:
            done: RunResult[np.ndarray] = embed_chunks.run(texts, check_cancel, progress)
        finally:
            self._embedding.close()  # done with the step: no batch waits for this job any more
        self.largest_batch = max(self.largest_batch, done.largest_batch)
        return np.stack(done.results) if done.results else np.zeros((0, 0), dtype=np.float32)

    def _write(self, store: VectorStore, write: DocumentWrite) -> int:
        try:
            # No cancel while waiting here, as a write alone has none: the job checked it (and that the
            # document is still its own) just before; a write that may already be in a commit is not
            # taken back, so the job does not report it cancelled.
            done: RunResult[Any] = store_documents.run([(store, write)])
        finally:
            self._storing.close()
        self.largest_write = max(self.largest_write, done.largest_batch)
        outcome: _Stored = done.results[0]
        if outcome.error is not None:
            raise outcome.error
        return outcome.count
