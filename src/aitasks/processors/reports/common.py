"""What the report job types share: fonts, a sub-range progress context, image helpers."""

from __future__ import annotations

import importlib.util
import io
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aitasks.jobs.models import Artifact
from aitasks.worker.context import JobContext

if TYPE_CHECKING:
    from PIL import Image as PILImage


@cache
def font_path(bold: bool = False) -> Path | None:
    """DejaVu Sans, the TrueType font that ships inside the matplotlib wheel (found without importing it)."""
    spec = importlib.util.find_spec("matplotlib")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / ("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf")
    return path if path.is_file() else None


def pil_font(size: int, bold: bool = False) -> Any:
    """A scalable PIL font: DejaVu Sans, else Pillow's own scalable default."""
    from PIL import ImageFont

    path = font_path(bold)
    if path is not None:
        return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


class SubContext(JobContext):
    """The context an operation run inside another job gets: its progress (0-100) lands in the parent's
    ``[low, high]`` range with the operation's name before its message; cancel checks and artifacts go to
    the parent job, so the parent's record lists the operation's files."""

    def __init__(self, parent: JobContext, low: float, high: float, label: str):
        super().__init__(parent.job, *parent.backing_stores(), parent.attempt, parent.delivery)
        self.parent = parent
        self.low, self.high, self.label = low, high, label
        self.saved_data: dict[str, bytes] = {}
        self.saved: dict[str, Artifact] = {}  # this operation's files (the parent lists them too)

    def progress(self, percent: float, message: str = "", stage: str | None = None) -> None:
        share = max(0.0, min(100.0, percent)) / 100.0
        text = f"{self.label}: {message}" if message else self.label
        value = self.low + (self.high - self.low) * share
        if stage is None:  # forwarded only when named: a parent context may predate stages
            self.parent.progress(value, text)
        else:
            self.parent.progress(value, text, stage)

    def flush(self) -> None:
        self.parent.flush()

    def check_cancel(self) -> None:
        self.parent.check_cancel()

    def save_artifact(self, name: str, data: bytes, media_type: str | None = None) -> Artifact:
        artifact = self.parent.save_artifact(name, data, media_type)
        self.saved_data[name] = data
        self.saved[name] = artifact
        return artifact

    @property
    def artifacts(self) -> list[Artifact]:
        return list(self.saved.values())


def checkerboard(size: tuple[int, int], cell: int = 12) -> PILImage.Image:
    """The usual light grey and white checks that show where an image is transparent."""
    import numpy as np
    from PIL import Image

    w, h = size
    ys, xs = np.indices((h, w))
    light = ((ys // cell + xs // cell) % 2).astype(bool)
    grid = np.where(light[..., None], np.uint8(255), np.uint8(204)).repeat(3, axis=2)
    return Image.fromarray(grid.astype(np.uint8), "RGB")


def on_checkerboard(img: PILImage.Image) -> PILImage.Image:
    """An RGB picture of ``img``: transparent parts over a checkerboard, opaque parts as they are."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        base = checkerboard(rgba.size).convert("RGBA")
        return Image.alpha_composite(base, rgba).convert("RGB")
    return img.convert("RGB")


def png_bytes(img: PILImage.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=3)
    return buf.getvalue()
