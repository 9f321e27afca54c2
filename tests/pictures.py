"""Test pictures: scikit-image's sample photos as arrays, and PNG/base64 encoding of arrays."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image
from skimage import data as samples


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def astronaut() -> np.ndarray:
    """512x512 RGB, a person: the segmentation and face models find her."""
    return np.asarray(samples.astronaut())


def coffee() -> np.ndarray:
    """300x200 RGB, an object on a table: no person."""
    return np.asarray(Image.fromarray(samples.coffee()).resize((300, 200)))
