"""``visualization``: run one image operation on a picture and show the result beside the original.

The operation is any image job type of the catalog that takes a single ``image`` (today
background_removal, object_removal and style_transfer; the list comes from the registry). It runs in
this job's own worker process, through the operation's own function, with its progress mapped into
this job's 5-85 % and its artifacts kept as this job's. Then a before/after preview is drawn: the
original on the left, the processed image on the right, each under its label, transparent parts on a
checkerboard.
"""

from __future__ import annotations

import importlib
import io
import pkgutil
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from aitasks.errors import FieldError, JobError, ValidationFailed
from aitasks.jobs.files import ImageFile
from aitasks.processors.registry import REGISTRY, JobType, job_type
from aitasks.processors.reports.common import SubContext, on_checkerboard, pil_font, png_bytes
from aitasks.worker.context import JobContext

PREVIEW_NAME = "preview.png"
PREVIEW_MAX_HEIGHT = 720  # each panel is at most this tall; the preview stays light to download


def _load_image_family() -> None:
    import aitasks.processors.image as family

    for mod in pkgutil.iter_modules(family.__path__, family.__name__ + "."):
        importlib.import_module(mod.name)


def single_image_operations() -> dict[str, JobType]:
    """Image job types that take exactly one required file, ``image``, and a ``parameters`` object."""
    _load_image_family()
    out: dict[str, JobType] = {}
    for jt in REGISTRY.all():
        fields = jt.input_model.model_fields
        if not jt.func.__module__.startswith("aitasks.processors.image.") or "parameters" not in fields:
            continue
        if "image" not in jt.files or not fields["image"].is_required():
            continue
        if any(fields[name].is_required() for name in jt.files if name != "image"):
            continue
        out[jt.name] = jt
    return out


OPERATIONS = single_image_operations()


def _error_text(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()))
        msg = "is not a known field" if e.get("type") == "extra_forbidden" else e.get("msg", "invalid")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


class VisualizationParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    operation: str = Field(description="The image operation to run: " + ", ".join(OPERATIONS) + ".",
                           json_schema_extra={"enum": list(OPERATIONS)})
    operation_parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="The operation's own parameters, as its job type takes them (see its section); "
                    "checked against that type's input model at submit.")
    after_label: str | None = Field(None, max_length=60,
                                    description="Label over the processed image; default: the operation's name.")

    @field_validator("operation")
    @classmethod
    def _known_operation(cls, value: str) -> str:
        if value not in OPERATIONS:
            raise PydanticCustomError("operation", "must be one of: {valid}", {"valid": ", ".join(OPERATIONS)})
        return value

    @field_validator("operation_parameters")
    @classmethod
    def _operation_parameters(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        op = OPERATIONS.get(info.data.get("operation", ""))
        if op is None:  # the operation itself is wrong: that error says so
            return value
        model = op.input_model.model_fields["parameters"].annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        try:
            checked = model.model_validate(value)
        except ValidationError as exc:
            raise PydanticCustomError("operation_parameters", "invalid for {op}: {errors}",
                                      {"op": op.name, "errors": _error_text(exc)}) from None
        return checked.model_dump(mode="json", exclude_none=True)


class VisualizationInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: ImageFile = Field(description="The picture to process.")
    parameters: VisualizationParameters


def operation_input(data: VisualizationInput) -> BaseModel:
    """The operation's own input model for this request."""
    op = OPERATIONS[data.parameters.operation]
    return op.input_model.model_validate({"image": data.image.model_dump(),
                                          "parameters": data.parameters.operation_parameters})


def check_operation(data: VisualizationInput, files: dict[str, bytes]) -> None:
    """At submit: the operation's own checks (e.g. object_removal's boxes inside the image), its field names
    moved under ``parameters.operation_parameters``."""
    op = OPERATIONS[data.parameters.operation]
    if op.check_files is None:
        return
    try:
        op.check_files(operation_input(data), {"image": files["image"]} if "image" in files else {})
    except ValidationFailed as exc:
        prefix = "parameters.operation_parameters"
        moved = [FieldError(prefix + f.field.removeprefix("parameters") if f.field.startswith("parameters")
                            else prefix, f"{op.name}: {f.field} {f.message}") for f in exc.fields]
        raise ValidationFailed(f"{op.name} cannot run on this input: {exc.message}", moved) from None


def route(data: VisualizationInput) -> str:
    return OPERATIONS[data.parameters.operation].queue_for(operation_input(data))


def before_after(before: Any, after: Any, after_label: str) -> tuple[Any, dict[str, Any]]:
    """The preview: ``before`` left, ``after`` right, same panel size, labels above. Returns the image and
    where each panel is (``[x, y, width, height]`` in preview pixels)."""
    from PIL import Image, ImageDraw

    w, h = before.size
    if h > PREVIEW_MAX_HEIGHT:
        w, h = max(1, round(w * PREVIEW_MAX_HEIGHT / h)), PREVIEW_MAX_HEIGHT
    left = on_checkerboard(before if before.size == (w, h) else before.resize((w, h), Image.Resampling.LANCZOS))
    right_src = after if after.size == (w, h) else after.resize((w, h), Image.Resampling.LANCZOS)
    right = on_checkerboard(right_src)
    font_size = max(18, min(40, h // 16))
    font = pil_font(font_size, bold=True)
    margin = max(16, font_size)
    band = round(font_size * 1.8)
    width, height = 2 * w + 3 * margin, h + band + 2 * margin
    canvas = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(canvas)
    boxes = {}
    for i, (label, panel) in enumerate((("Before", left), (after_label, right))):
        x, y = margin + i * (w + margin), margin + band
        canvas.paste(panel, (x, y))
        draw.rectangle((x - 1, y - 1, x + w, y + h), outline=(180, 180, 180))
        text = label
        while draw.textlength(text, font=font) > w and len(text) > 4:
            text = text[:-2].rstrip() + "…"
        draw.text((x + w / 2, margin + band / 2), text, font=font, fill=(25, 25, 25), anchor="mm")
        boxes["before_box" if i == 0 else "after_box"] = [x, y, w, h]
    return canvas, {"width": width, "height": height, **boxes}


@job_type(
    "visualization", input=VisualizationInput, queue="cpu", route=route,
    soft_time_limit_s=max(op.soft_time_limit_s for op in OPERATIONS.values()) + 60,
    time_limit_s=max(op.time_limit_s for op in OPERATIONS.values()) + 60,
    description="Run one image operation (" + ", ".join(OPERATIONS) + ") and draw a labelled before/after "
                "preview beside the processed image.",
    check_files=check_operation, catalog={"operations": list(OPERATIONS)},
    examples=(
        {"task_type": "visualization", "image": "<base64 PNG/JPEG/WebP>",
         "parameters": {"operation": "background_removal", "operation_parameters": {"output": "rgba"}}},
        {"task_type": "visualization", "image": "<base64>",
         "parameters": {"operation": "style_transfer", "operation_parameters": {"style": "watercolor"}}},
    ),
)
def visualization(data: VisualizationInput, ctx: JobContext) -> dict[str, Any]:
    from PIL import Image, ImageOps

    params = data.parameters
    op = OPERATIONS[params.operation]
    ctx.progress(2, f"running {op.name}")
    sub = SubContext(ctx, 5, 85, op.name)
    op_result = op.func(operation_input(data), sub)
    ctx.check_cancel()
    processed_name = op_result.get("image_artifact")
    if not isinstance(processed_name, str) or processed_name not in sub.saved_data:
        raise JobError(f"{op.name} returned no image to show")
    before = ImageOps.exif_transpose(Image.open(io.BytesIO(ctx.read_input(data.image))))  # upright, as the op saw it
    after = Image.open(io.BytesIO(sub.saved_data[processed_name]))
    ctx.progress(88, "drawing the before/after preview")
    preview, layout = before_after(before, after, params.after_label or op.name.replace("_", " ").capitalize())
    ctx.check_cancel()
    ctx.save_artifact(PREVIEW_NAME, png_bytes(preview), "image/png")
    ctx.progress(97, "preview saved")
    metadata = dict(op_result.get("metadata") or {})
    metadata["operation"] = op.name
    metadata["operation_parameters"] = params.operation_parameters
    metadata["preview"] = {"artifact": PREVIEW_NAME, **layout}
    return {**op_result, "image_artifact": processed_name, "preview_artifact": PREVIEW_NAME,
            "operation": op.name, "metadata": metadata}
