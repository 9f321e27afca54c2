"""Decoding inputs to arrays and encoding results to PNG, the same way for every image job type."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps

from aitasks.errors import JobError

if TYPE_CHECKING:
    import numpy as np


@dataclass
class Decoded:
    rgb: np.ndarray  # H x W x 3, uint8, upright (EXIF orientation applied), alpha flattened on white
    original_size: tuple[int, int]  # width, height as uploaded (after orientation)
    format: str

    @property
    def size(self) -> tuple[int, int]:
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])

    def metadata(self) -> dict[str, Any]:
        return {"width": self.size[0], "height": self.size[1], "format": self.format,
                "original_width": self.original_size[0], "original_height": self.original_size[1]}


def _open(data: bytes, field: str) -> tuple[Image.Image, str]:
    """The image turned upright (EXIF orientation) and its format (read before the turn drops it)."""
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as exc:  # the API checked it already; a file changed on disk is still bad input
        raise JobError(f"{field}: not a readable image ({exc})") from exc
    return ImageOps.exif_transpose(img), img.format or "?"


def decode_rgb(data: bytes, field: str = "image", max_side: int | None = None) -> Decoded:
    """The image as RGB; transparent parts become white; larger than ``max_side`` is scaled down."""
    import numpy as np

    img, fmt = _open(data, field)
    original = img.size
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        img = flat
    else:
        img = img.convert("RGB")
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return Decoded(rgb=np.asarray(img, dtype=np.uint8).copy(), original_size=original, format=fmt)


def decode_mask(data: bytes, size: tuple[int, int], field: str = "mask") -> np.ndarray:
    """A mask image as H x W bool, True where it is painted: white (or opaque, for a mask with alpha)."""
    import numpy as np

    img, _ = _open(data, field)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        channel = img.convert("RGBA").getchannel("A")
    else:
        channel = img.convert("L")
    if channel.size != size:
        channel = channel.resize(size, Image.Resampling.NEAREST)
    return np.asarray(channel) > 127


def encode_png(array: np.ndarray) -> bytes:
    """RGB, RGBA or grey uint8 array to PNG bytes (fast compression: results are written once)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG", compress_level=3)
    return buf.getvalue()

