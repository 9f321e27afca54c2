"""The result every image job returns: a PNG artifact, inlined as ``image_data`` by /result/, and metadata."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aitasks.processors.image import codec
from aitasks.processors.image.timing import Stopwatch
from aitasks.worker.context import JobContext

if TYPE_CHECKING:
    import numpy as np

RESULT_NAME = "result.png"


def image_result(ctx: JobContext, clock: Stopwatch, image: np.ndarray, decoded: codec.Decoded | None,
                 **metadata: Any) -> dict[str, Any]:
    """Save ``image`` as the job's PNG and build the seed-shaped result around it."""
    ctx.save_artifact(RESULT_NAME, codec.encode_png(image), "image/png")
    clock.lap("encode")
    ctx.progress(95, "result encoded")
    described = {**decoded.metadata(), "scaled_down": decoded.size != decoded.original_size} if decoded else {}
    return {
        "image_artifact": RESULT_NAME,
        "metadata": {**described, **metadata, "timings_ms": clock.report()},
    }
