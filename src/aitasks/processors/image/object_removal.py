"""``object_removal``: paint out what a mask or boxes mark, filling it from its surroundings.

OpenCV inpainting: Telea's fast marching method (default) or Navier-Stokes. The region is grown by
``dilate_px`` first, so the object's soft edge and shadow go too. The mask is checked at submit: the
image's size, and not empty.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aitasks.errors import FieldError, ValidationFailed
from aitasks.jobs.files import ImageFile
from aitasks.processors.image import codec
from aitasks.processors.image.result import image_result
from aitasks.processors.image.timing import Stopwatch
from aitasks.processors.registry import job_type
from aitasks.worker.context import JobContext

Box = tuple[int, int, int, int]


class ObjectRemovalParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    boxes: list[Box] | None = Field(None, min_length=1, max_length=100,
                                    description="Regions to remove as [x, y, width, height] in pixels "
                                                "(instead of a mask).")
    method: Literal["telea", "navier_stokes"] = Field("telea", description="OpenCV inpainting algorithm.")
    radius: int = Field(5, ge=1, le=50, description="Neighbourhood the inpainting draws from, in pixels.")
    dilate_px: int = Field(3, ge=0, le=50, description="Grow the region by this much before filling.")


class ObjectRemovalInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: ImageFile
    mask: ImageFile | None = Field(None, description="Same size as image; white (or opaque) = remove.")
    parameters: ObjectRemovalParameters = Field(default_factory=ObjectRemovalParameters)


def check_region(data: ObjectRemovalInput, files: dict[str, bytes]) -> None:
    """At submit: exactly one of mask or boxes; a mask of the image's size that marks something; boxes
    inside the image."""
    boxes, image = data.parameters.boxes, data.image
    if (data.mask is None) == (boxes is None):
        raise ValidationFailed("give exactly one of mask (an image) or parameters.boxes", [
            FieldError("mask", "give a mask or parameters.boxes, not both or neither")])
    if data.mask is not None:
        if (data.mask.width, data.mask.height) != (image.width, image.height):
            message = (f"is {data.mask.width}x{data.mask.height} but image is {image.width}x{image.height}: "
                       "they must be the same size")
            raise ValidationFailed(f"mask {message}", [FieldError("mask", message)])
        marked = codec.decode_mask(files["mask"], (image.width or 1, image.height or 1))
        if not marked.any():
            raise ValidationFailed("mask marks nothing to remove: paint the object white (or opaque)",
                                   [FieldError("mask", "is empty (no white or opaque pixel)")])
    for i, (x, y, w, h) in enumerate(boxes or []):
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > (image.width or 0) or y + h > (image.height or 0):
            message = f"[{x}, {y}, {w}, {h}] is not a non-empty box inside the {image.width}x{image.height} image"
            raise ValidationFailed(f"parameters.boxes[{i}] {message}", [FieldError(f"parameters.boxes[{i}]", message)])


def region(data: ObjectRemovalInput, size: tuple[int, int], mask_bytes: bytes | None) -> Any:
    """The uint8 mask (255 = remove) at ``size`` (width, height)."""
    import numpy as np

    w, h = size
    if mask_bytes is not None:
        return codec.decode_mask(mask_bytes, size).astype(np.uint8) * 255
    out = np.zeros((h, w), np.uint8)
    sx, sy = w / (data.image.width or w), h / (data.image.height or h)  # boxes are in input pixels
    for x, y, bw, bh in data.parameters.boxes or []:
        out[int(y * sy):int(np.ceil((y + bh) * sy)), int(x * sx):int(np.ceil((x + bw) * sx))] = 255
    return out


def inpaint(rgb: Any, mask: Any, params: ObjectRemovalParameters) -> Any:
    import cv2
    import numpy as np

    if params.dilate_px:
        k = 2 * params.dilate_px + 1
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    flag = cv2.INPAINT_TELEA if params.method == "telea" else cv2.INPAINT_NS
    bgr = cv2.inpaint(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), mask, params.radius, flag)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)), mask


@job_type(
    "object_removal", input=ObjectRemovalInput, queue="cpu", soft_time_limit_s=240, time_limit_s=300,
    description="Remove what a mask or boxes mark and fill the hole from its surroundings (inpainting).",
    check_files=check_region,
    examples=({"task_type": "object_removal", "image": "<base64>",
               "parameters": {"boxes": [[120, 80, 60, 60]], "method": "telea"}},),
)
def object_removal(data: ObjectRemovalInput, ctx: JobContext) -> dict[str, Any]:
    params = data.parameters
    clock = Stopwatch()
    decoded = codec.decode_rgb(ctx.read_input(data.image), "image", max_side=2048)
    mask_bytes = ctx.read_input(data.mask) if data.mask is not None else None
    mask = region(data, decoded.size, mask_bytes)
    clock.lap("decode")
    ctx.progress(20, "image and region decoded")
    out, grown = inpaint(decoded.rgb, mask, params)
    clock.lap("inpaint")
    ctx.progress(80, "region filled")
    return image_result(ctx, clock, out, decoded, method=f"opencv inpaint ({params.method})",
                        region="mask" if data.mask else "boxes", removed_fraction=round(float((grown > 0).mean()), 4))
