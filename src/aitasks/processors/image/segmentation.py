"""Foreground masks: a person from mediapipe's segmentation model, anything else by GrabCut.

Both return a float mask in [0, 1] at the image's size. ``auto`` picks the person model only when a
face is found: the selfie model alone calls a cat, or a cup, a person.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aitasks.processors.image import models

if TYPE_CHECKING:
    import numpy as np

GRABCUT_SIDE = 320  # GrabCut runs on a copy this size: its cost grows fast with pixels


def has_face(rgb: np.ndarray) -> bool:
    result = models.face_detector().process(rgb)
    return bool(result.detections)


def person_mask(rgb: np.ndarray) -> np.ndarray:
    """mediapipe selfie segmentation, cleaned to the regions touching the confident core."""
    import numpy as np

    mask = models.selfie_segmenter().process(rgb).segmentation_mask.astype(np.float32)
    core = largest_regions(mask > 0.5)
    if core.any():
        mask = np.where(core | (mask > 0.8), mask, mask * 0.0)
    return np.clip(mask, 0.0, 1.0)


def object_mask(rgb: np.ndarray, margin: float = 0.05, iterations: int = 5) -> np.ndarray:
    """GrabCut seeded with a rectangle ``margin`` in from the edges: the border is background."""
    import cv2
    import numpy as np

    h, w = rgb.shape[:2]
    scale = min(1.0, GRABCUT_SIDE / max(h, w))
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    mx, my = max(1, round(sw * margin)), max(1, round(sh * margin))
    rect = (mx, my, max(1, sw - 2 * mx), max(1, sh - 2 * my))
    gc = np.zeros((sh, sw), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(cv2.cvtColor(small, cv2.COLOR_RGB2BGR), gc, rect, bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
    fg = (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)
    fg = largest_regions(fg)
    soft = cv2.GaussianBlur(fg.astype(np.float32), (0, 0), sigmaX=1.0)
    return np.clip(cv2.resize(soft, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def largest_regions(binary: np.ndarray, keep_fraction: float = 0.1) -> np.ndarray:
    """Keep the largest connected region and any other at least ``keep_fraction`` of its size."""
    import cv2
    import numpy as np

    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    if count <= 1:
        return binary.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = [i + 1 for i, a in enumerate(areas) if a >= keep_fraction * areas.max()]
    return np.isin(labels, keep)


def feather(mask: np.ndarray, radius: float) -> np.ndarray:
    """Soften the mask's edge by ``radius`` pixels, so a cut-out does not look cut with scissors."""
    import cv2
    import numpy as np

    if radius <= 0:
        return mask
    return np.clip(cv2.GaussianBlur(mask, (0, 0), sigmaX=radius), 0.0, 1.0)
