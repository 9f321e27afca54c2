"""``background_removal``: cut the subject out of a photo.

People (a face is found) are segmented by mediapipe's selfie model; anything else by GrabCut from a
centred rectangle. The result is the subject on a transparent background (``rgba``), the mask itself
(``mask``), or the subject on a plain colour (``color``).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aitasks.jobs.files import ImageFile
from aitasks.processors.image import codec, models, segmentation
from aitasks.processors.image.result import image_result
from aitasks.processors.image.timing import Stopwatch
from aitasks.processors.registry import job_type
from aitasks.worker.context import JobContext

MAX_SIDE = 2048  # larger inputs are scaled down for processing; the metadata says so


class BackgroundRemovalParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["auto", "person", "object"] = Field(
        "auto", description="person: mediapipe segmentation; object: GrabCut from a centred rectangle; "
                            "auto: person when a face is found, else object.")
    output: Literal["rgba", "mask", "color"] = Field(
        "rgba", description="rgba: transparent background; mask: white subject on black; "
                            "color: the subject on background_color.")
    background_color: str = Field("#ffffff", description="#rrggbb, for output=color.")
    margin: float = Field(0.05, ge=0.0, le=0.4, description="object mode: the border fraction taken as background.")
    feather_px: float = Field(1.5, ge=0.0, le=20.0, description="Softening of the mask's edge, in pixels.")

    @field_validator("background_color")
    @classmethod
    def _hex_colour(cls, value: str) -> str:
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", value):
            raise ValueError("must be a colour as #rrggbb")
        return value.lower()


class BackgroundRemovalInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: ImageFile
    parameters: BackgroundRemovalParameters = Field(default_factory=BackgroundRemovalParameters)


def preload() -> None:
    models.selfie_segmenter()
    models.face_detector()


def remove_background(rgb: Any, params: BackgroundRemovalParameters) -> tuple[Any, str, Any]:
    """The output array, the method used and the float mask, for an RGB array."""
    import numpy as np

    mode = params.mode
    if mode == "auto":
        mode = "person" if segmentation.has_face(rgb) else "object"
    if mode == "person":
        mask = segmentation.person_mask(rgb)
        method = "mediapipe selfie segmentation"
    else:
        mask = segmentation.object_mask(rgb, params.margin)
        method = "grabcut (centred rectangle)"
    mask = segmentation.feather(mask, params.feather_px)
    alpha = np.round(mask * 255).astype(np.uint8)
    if params.output == "mask":
        out = alpha
    elif params.output == "rgba":
        out = np.dstack([rgb, alpha])
    else:
        colour = np.array([int(params.background_color[i:i + 2], 16) for i in (1, 3, 5)], np.float32)
        m = mask[..., None]
        out = np.round(rgb.astype(np.float32) * m + colour * (1.0 - m)).astype(np.uint8)
    return out, method, mask


@job_type(
    "background_removal", input=BackgroundRemovalInput, queue="cpu", soft_time_limit_s=240, time_limit_s=300,
    description="Cut the subject out of a photo: transparent background, mask, or a plain colour.",
    preload=preload,
    examples=({"task_type": "background_removal", "image": "<base64 PNG/JPEG/WebP>",
               "parameters": {"output": "rgba"}},),
)
def background_removal(data: BackgroundRemovalInput, ctx: JobContext) -> dict[str, Any]:
    params = data.parameters
    clock = Stopwatch()
    decoded = codec.decode_rgb(ctx.read_input(data.image), "image", max_side=MAX_SIDE)
    clock.lap("decode")
    ctx.progress(15, "image decoded")
    if params.mode != "object":
        preload()
    clock.lap("model")
    ctx.progress(30, "model ready")
    out, method, mask = remove_background(decoded.rgb, params)
    clock.lap("inference")
    ctx.progress(80, "background removed")
    return image_result(ctx, clock, out, decoded, method=method, mode=params.mode, output=params.output,
                        foreground_fraction=round(float(mask.mean()), 4), model_loads_in_process=models.loads())
