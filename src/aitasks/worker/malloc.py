"""glibc allocator settings for worker processes that handle large images.

By default glibc returns every freed block above a moving threshold (up to 32 MB) to the kernel with
munmap, so an image job that allocates and frees tens of megabytes of arrays per step pays for fresh
zeroed pages each time. Measured with the image benchmark (docs/benchmarks.md): style_transfer
watercolor ran 19 ms slower per 512×512 job in a worker than in a fresh process, face_swap 7 ms.
Fixing the thresholds (mmap above 32 MB, trim above 64 MB) removes that, at the cost of up to 64 MB
of freed memory kept per process. Set in the worker's main process before the pool forks, so every
pool process inherits it. A no-op where glibc's mallopt is missing (musl, macOS).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 64 * 1024 * 1024


def tune_malloc() -> bool:
    """Fix glibc's mmap and trim thresholds for this process and its forks; False if not glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    if not ok:
        log.warning("mallopt refused the image-friendly thresholds; using glibc's defaults")
    return ok
