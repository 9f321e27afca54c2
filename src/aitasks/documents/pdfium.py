"""The one owner of pypdfium2 in a process, and its lock.

PDFium is not thread-safe, not even across documents, and the API calls it from its thread pool at upload
(many uploads at once). So every PDFium call in aitasks runs inside ``locked()``: the upload checks, the
worker's text extraction and its page rendering for OCR. No other module imports pypdfium2 (a test checks);
they get the module, and may touch its objects, only inside the block. Objects are closed explicitly
inside it too: left to the garbage collector, their finalizers would call PDFium from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_LOCK = threading.RLock()  # re-entrant: a helper that locks may be called from a locked block


@contextmanager
def locked() -> Iterator[Any]:
    """pypdfium2 (imported on first use, which initialises PDFium: under the lock too) with the lock held."""
    with _LOCK:
        import pypdfium2  # type: ignore[import-untyped]

        yield pypdfium2


def held() -> bool:
    """Whether this thread holds the PDFium lock (for assertions and tests)."""
    return bool(_LOCK._is_owned())  # type: ignore[attr-defined]
