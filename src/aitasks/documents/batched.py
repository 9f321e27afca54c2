"""The embedding of document chunks as a batchable step (worker/batching.py): the chunks of every
ingestion job running in this process at once go through the model together.

On 2 CPU cores the model itself gains little from a larger batch (docs/benchmarks.md); what batching
buys is that one thread keeps the model busy while the other jobs read, chunk and store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import numpy as np

from aitasks.documents import service
from aitasks.settings import get_settings
from aitasks.worker.batching import RunResult, batchable

MAX_WAIT_MS = 25.0


def max_batch() -> int:
    """AITASKS_EMBEDDING_MAX_BATCH (16: on 2 cores 8-16 chunks a call ran faster than 32, less padding)."""
    return get_settings().embedding_max_batch


@batchable("document_embedding", max_batch=max_batch, max_wait_ms=MAX_WAIT_MS)
def embed_chunks(texts: list[str]) -> Sequence[np.ndarray]:
    """Unit-length vectors for chunk texts, with the process's model (loaded once per process)."""
    return list(service.embedder(get_settings()).encode(texts, batch_size=len(texts)))


class BatchedEncode:
    """``pipeline.ingest_document``'s ``encode`` hook: a job's chunks through the shared step. Used as a
    context around the job: it announces the job to the step until its chunks are embedded (so a batch
    waits for it only while it may still come), and remembers the largest batch they rode in."""

    def __init__(self) -> None:
        self.largest_batch = 0
        self._joined = contextlib.ExitStack()

    def __enter__(self) -> BatchedEncode:
        self._joined.enter_context(embed_chunks.participant())
        return self

    def __exit__(self, *exc: object) -> None:
        self._joined.close()

    def __call__(self, texts: list[str], check_cancel: Callable[[], None],
                 progress: Callable[[float], None] = lambda fraction: None) -> np.ndarray:
        try:
            done: RunResult[np.ndarray] = embed_chunks.run(texts, check_cancel, progress)
        finally:
            self._joined.close()  # done with the step: no batch waits for this job any more
        self.largest_batch = max(self.largest_batch, done.largest_batch)
        return np.stack(done.results) if done.results else np.zeros((0, 0), dtype=np.float32)
