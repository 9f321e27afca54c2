"""The pipeline's heavy objects as the service holds them: one embedder and one vector store per process.

Workers (the ``document_ingestion`` job type) and the API (search, delete) both come here, so they open
the same store at ``AITASKS_VECTOR_STORE`` with the same model's dimension. Nothing heavy is imported
until first use: the API starts without torch, numpy or LanceDB and loads them on its first search.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from aitasks.documents.extract import Limits

if TYPE_CHECKING:
    from aitasks.documents.embedding import Embedder
    from aitasks.documents.store import VectorStore
    from aitasks.settings import Settings

_lock = threading.Lock()
_model_lock = threading.Lock()
_stores: dict[tuple[int, str, int], VectorStore] = {}


def limits(settings: Settings) -> Limits:
    return Limits(max_pages=settings.max_document_pages)


def model_dir(settings: Settings) -> str | None:
    return str(settings.embedding_model_dir) if settings.embedding_model_dir else None


def embedder(settings: Settings) -> Embedder:
    """The process's embedding model (loaded on first call, then cached by ``load_embedder``)."""
    from aitasks.documents.embedding import load_embedder

    with _model_lock:  # two first searches at once in the API's threads: one load, not two
        return load_embedder(model_dir(settings))


def model_dimension(settings: Settings) -> int:
    """The model's output size, read from its folder's config when it says (no torch needed to delete a
    document); otherwise by loading the model. Read once per process and folder, not per call."""
    return _dimension(model_dir(settings))


@functools.cache
def _dimension(configured_dir: str | None) -> int:
    from aitasks.documents.embedding import default_model_dir, load_embedder

    folder = Path(configured_dir or default_model_dir())
    try:
        modules = json.loads((folder / "modules.json").read_text())
        if not any("Dense" in str(m.get("type", "")) for m in modules):
            pooling = next(m for m in modules if "Pooling" in str(m.get("type", "")))
            config = json.loads((folder / pooling["path"] / "config.json").read_text())
            return int(config["word_embedding_dimension"])
    except (OSError, ValueError, KeyError, StopIteration):
        pass
    with _model_lock:
        return load_embedder(configured_dir).dimension


def store(settings: Settings) -> VectorStore:
    """The process's vector store (a forked worker child opens its own, never its parent's)."""
    from aitasks.documents.vector_stores import open_store

    location = settings.vector_store_location
    dimension = model_dimension(settings)
    key = (os.getpid(), location, dimension)
    with _lock:
        found = _stores.get(key)
        if found is None:
            for old in [k for k in _stores if k[0] != key[0]]:
                _stores.pop(old)  # inherited through fork: not ours to use or close
            found = _stores[key] = open_store(location, dimension)
        return found


def reset_store(settings: Settings) -> None:
    """Drop the process's store after a failed write, so the next attempt opens a fresh one."""
    with _lock:
        for key in [k for k in _stores if k[1] == settings.vector_store_location]:
            found = _stores.pop(key)
            if key[0] == os.getpid():
                try:
                    found.close()
                except Exception:  # noqa: BLE001 - already broken; the point is to let go of it
                    pass
