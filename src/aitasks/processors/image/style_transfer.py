"""``style_transfer``: restyle a picture with a named preset, or with the look of another picture.

Presets (OpenCV's computational photography filters, documented in docs/job-types.md):
- ``pencil``: colour pencil sketch (``cv2.pencilSketch``).
- ``watercolor``: edge-preserving smoothing with boosted detail (``cv2.stylization``).
- ``oil``: oil painting (``cv2.xphoto.oilPainting``, brush 7, colour quantisation 1).
- ``cartoon``: two bilateral filters, colours quantised to 8 levels, dark adaptive-threshold edges.
- ``detail``: detail enhancement (``cv2.detailEnhance``).
``style_image``: the image takes the colour statistics of the style picture (Lab mean and spread,
then per-channel histogram matching) and its texture strength (local contrast scaled to match).
``strength`` mixes the styled result with the original.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from aitasks.errors import FieldError, ValidationFailed
from aitasks.jobs.files import ImageFile
from aitasks.processors.image import codec
from aitasks.processors.image.result import image_result
from aitasks.processors.image.timing import Stopwatch
from aitasks.processors.registry import job_type
from aitasks.worker.context import JobContext

Preset = Literal["pencil", "watercolor", "oil", "cartoon", "detail"]
PRESETS: dict[str, str] = {
    "pencil": "colour pencil sketch (cv2.pencilSketch)",
    "watercolor": "edge-preserving stylization (cv2.stylization)",
    "oil": "oil painting (cv2.xphoto.oilPainting)",
    "cartoon": "bilateral smoothing, 8 colour levels, adaptive-threshold edges",
    "detail": "detail enhancement (cv2.detailEnhance)",
}
MAX_SIDE = 2048


class StyleTransferParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    style: Preset | None = Field(None, description="A named preset (or send style_image instead).")
    strength: float = Field(1.0, ge=0.0, le=1.0, description="1 = fully styled; lower mixes in the original.")


class StyleTransferInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: ImageFile
    style_image: ImageFile | None = Field(None, description="Take the colours and texture of this picture.")
    parameters: StyleTransferParameters = Field(default_factory=StyleTransferParameters)


def check_style(data: StyleTransferInput, files: dict[str, bytes]) -> None:
    if (data.parameters.style is None) == (data.style_image is None):
        raise ValidationFailed("give exactly one of parameters.style or style_image", [FieldError(
            "parameters.style", f"give a preset ({', '.join(PRESETS)}) or a style_image, not both or neither")])


def _bgr(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """OpenCV's filters work in BGR; ours take and give RGB."""

    def in_rgb(rgb: Any) -> Any:
        import cv2  # here, not at import: the API imports this module and stays free of OpenCV

        return cv2.cvtColor(fn(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)), cv2.COLOR_BGR2RGB)

    return in_rgb


def pencil(bgr: Any) -> Any:
    import cv2

    _, colour = cv2.pencilSketch(bgr, sigma_s=60, sigma_r=0.07, shade_factor=0.05)
    return colour


def watercolor(bgr: Any) -> Any:
    import cv2

    return cv2.stylization(bgr, sigma_s=60, sigma_r=0.45)


def oil(bgr: Any) -> Any:
    import cv2

    return cv2.xphoto.oilPainting(bgr, 7, 1)


def cartoon(bgr: Any) -> Any:
    import cv2
    import numpy as np

    smooth = cv2.bilateralFilter(cv2.bilateralFilter(bgr, 9, 75, 75), 9, 75, 75)
    levels = 8
    step = 256 // levels
    flat = (smooth // step) * step + step // 2
    grey = cv2.medianBlur(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), 7)
    edges = cv2.adaptiveThreshold(grey, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 4)
    return np.where(edges[..., None] == 0, 0, flat).astype(np.uint8)


def detail(bgr: Any) -> Any:
    import cv2

    return cv2.detailEnhance(bgr, sigma_s=10, sigma_r=0.15)


FILTERS: dict[str, Callable[[Any], Any]] = {
    "pencil": _bgr(pencil), "watercolor": _bgr(watercolor), "oil": _bgr(oil),
    "cartoon": _bgr(cartoon), "detail": _bgr(detail),
}


def from_example(rgb: Any, style: Any) -> Any:
    """Colour statistics (Lab Reinhard transfer, then histogram matching) and texture strength of ``style``."""
    import cv2
    import numpy as np
    from skimage.exposure import match_histograms

    src = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float32)
    ref = cv2.cvtColor(style, cv2.COLOR_RGB2LAB).astype(np.float32)
    for ch in range(3):
        s, r = src[..., ch], ref[..., ch]
        src[..., ch] = (s - s.mean()) * (r.std() / max(float(s.std()), 1e-3)) + r.mean()
    out = cv2.cvtColor(np.clip(src, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)
    out = match_histograms(out, style, channel_axis=-1).astype(np.float32)
    # Texture: scale the fine detail (image minus its blur) by the style's detail-to-ours ratio.
    def detail_of(img: Any) -> Any:
        grey = cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float32)
        return grey - cv2.GaussianBlur(grey, (0, 0), 2.0)

    gain = float(np.clip(detail_of(style).std() / max(float(detail_of(out).std()), 1e-3), 0.5, 2.5))
    base = cv2.GaussianBlur(out, (0, 0), 2.0)
    return np.clip(base + (out - base) * gain, 0, 255).astype(np.uint8)


def stylize(rgb: Any, params: StyleTransferParameters, style_rgb: Any | None = None) -> Any:
    import numpy as np

    styled = from_example(rgb, style_rgb) if style_rgb is not None else FILTERS[params.style or "detail"](rgb)
    if params.strength >= 1.0:
        return styled
    mixed = styled.astype(np.float32) * params.strength + rgb.astype(np.float32) * (1 - params.strength)
    return np.round(mixed).astype(np.uint8)


@job_type(
    "style_transfer", input=StyleTransferInput, queue="cpu", soft_time_limit_s=240, time_limit_s=300,
    description="Restyle a picture with a preset (pencil, watercolor, oil, cartoon, detail) or like style_image.",
    check_files=check_style, catalog={"styles": PRESETS},
    examples=({"task_type": "style_transfer", "image": "<base64>", "parameters": {"style": "watercolor"}},),
)
def style_transfer(data: StyleTransferInput, ctx: JobContext) -> dict[str, Any]:
    params = data.parameters
    clock = Stopwatch()
    decoded = codec.decode_rgb(ctx.read_input(data.image), "image", max_side=MAX_SIDE)
    style_rgb = None
    if data.style_image is not None:
        style_rgb = codec.decode_rgb(ctx.read_input(data.style_image), "style_image", max_side=1024).rgb
    clock.lap("decode")
    ctx.progress(20, "image decoded")
    out = stylize(decoded.rgb, params, style_rgb)
    clock.lap("stylize")
    ctx.progress(80, "style applied")
    method = PRESETS[params.style] if params.style else "Lab colour transfer + histogram match + detail gain"
    return image_result(ctx, clock, out, decoded, style=params.style or "style_image", strength=params.strength,
                        method=method)
