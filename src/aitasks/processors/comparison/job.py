"""``comparison``: one image, 2 to 8 variants (each an image job type with its parameters), one grid.

Each variant runs as a child job (a real job on its own type's queue, so several workers share the
work; see worker/children.py for the chord on the job store). When the last child ends, this job
runs again and composes one labelled grid: a tile per variant (label: the type and the parameters
given), a failed or cancelled child as a tile saying so with its error, and the original first
unless ``include_original`` is false. The job succeeds as long as the grid is made.

A variant type is any job type with an ``image`` input and no other required file input, except
``comparison`` itself. Variants are checked at submit against their own type's input model, so an
error names the field as ``parameters.variants[1].parameters.style``.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aitasks.errors import FieldError, ServiceUnavailable, ValidationFailed, pydantic_fields, summary
from aitasks.jobs.files import FileRef, ImageFile
from aitasks.jobs.models import Job, Status
from aitasks.processors.comparison import grid
from aitasks.processors.registry import JobType, job_type, load_all
from aitasks.settings import get_settings
from aitasks.worker.children import ChildSpec, Deferred
from aitasks.worker.context import JobContext

NAME = "comparison"
GRID_NAME = "grid.png"


class Variant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_type: str = Field(description="An image job type with an `image` input, e.g. style_transfer, "
                                       "background_removal, object_removal.")
    parameters: dict[str, Any] = Field(default_factory=dict, description="That type's parameters.")
    label: str | None = Field(None, min_length=1, max_length=80,
                              description="The tile's label; default: the type and the parameters given.")


class ComparisonParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    variants: list[Variant] = Field(min_length=2, max_length=8, description="2 to 8 variants, run in parallel.")
    tile_px: int = Field(256, ge=64, le=1024, description="The side of each tile's picture area, in pixels.")
    columns: int | None = Field(None, ge=1, le=9, description="Tiles per row; default: a near-square grid.")
    include_original: bool = Field(True, description="Put the input image first, labelled 'original'.")


class ComparisonInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: ImageFile
    parameters: ComparisonParameters


def is_variant_type(jt: JobType) -> bool:
    others = [n for n in jt.files if n != "image"]
    return (jt.name != NAME and "image" in jt.files and jt.files["image"].kind == "image"
            and not any(jt.input_model.model_fields[n].is_required() for n in others))


def variant_types() -> dict[str, JobType]:
    return {jt.name: jt for jt in load_all().all() if is_variant_type(jt)}


def child_input(image: FileRef, variant: Variant) -> dict[str, Any]:
    """The child's input: the same image reference (its file is copied to the child) and the variant's parameters."""
    return {"image": image.model_dump(exclude_none=True), "parameters": variant.parameters}


def _prefixed(fields: list[FieldError], prefix: str) -> list[FieldError]:
    return [FieldError(f"{prefix}.{f.field}" if f.field != "body" else prefix, f.message) for f in fields]


def check_variants(data: ComparisonInput, files: dict[str, bytes]) -> None:
    """At submit: each variant is valid for its own type (type, parameters and that type's file checks)."""
    allowed = variant_types()
    errors: list[FieldError] = []
    for i, variant in enumerate(data.parameters.variants):
        prefix = f"parameters.variants[{i}]"
        jt = allowed.get(variant.task_type)
        if jt is None:
            errors.append(FieldError(f"{prefix}.task_type", f"must be one of: {', '.join(sorted(allowed))}"))
            continue
        reason = jt.unavailable_reason(get_settings())
        if reason:
            raise ServiceUnavailable(f"{prefix}: {jt.name} is not available in this deployment: {reason}")
        try:
            child = jt.input_model.model_validate(child_input(data.image, variant))
        except ValidationError as exc:
            errors.extend(pydantic_fields(list(exc.errors()), prefix))
            continue
        if jt.check_files is not None:
            try:
                jt.check_files(child, {"image": files["image"]} if "image" in files else {})
            except ValidationFailed as exc:
                errors.extend(_prefixed(exc.fields, prefix) or [FieldError(prefix, exc.message)])
    if errors:
        raise ValidationFailed(summary(errors), errors)


def label(variant: Variant) -> str:
    """``type`` on the first line, then the parameters the variant gave (``key=value, ...``)."""
    if variant.label:
        return variant.label
    given = ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in variant.parameters.items())
    return f"{variant.task_type}\n{given}" if given else variant.task_type


def tile_for(ctx: JobContext, variant: Variant, child: Job | None) -> tuple[grid.Tile, dict[str, Any]]:
    info: dict[str, Any] = {"kind": "variant", "task_type": variant.task_type, "parameters": variant.parameters,
                            "label": label(variant)}
    if child is None:
        info.update(status="EXPIRED", error="the child job's record expired before the grid was made")
        return grid.Tile(info["label"], failure="MISSING", error=info["error"]), info
    info.update(task_id=child.id, status=child.status.value)
    if child.status is Status.SUCCESS:
        name = (child.result or {}).get("image_artifact")
        if isinstance(name, str):
            try:
                return grid.Tile(info["label"], image=ctx.read_child_file(child, name)), info
            except FileNotFoundError:
                pass
        info["error"] = "the child job produced no image"
        return grid.Tile(info["label"], failure="FAILED", error=info["error"]), info
    if child.status is Status.REVOKED:
        info["error"] = child.message or "cancelled"
        return grid.Tile(info["label"], failure="CANCELLED", error=info["error"]), info
    info["error"] = child.error_message or child.message or "failed"
    info["error_type"] = child.error_type
    return grid.Tile(info["label"], failure="FAILED", error=info["error"]), info


@job_type(
    NAME, input=ComparisonInput, queue="cpu", check_files=check_variants, soft_time_limit_s=120, time_limit_s=180,
    description="Run one image through 2-8 variants (image job types with parameters) as parallel child jobs; "
                "one labelled grid, a failed variant shown as FAILED.",
    examples=({"task_type": NAME, "image": "<base64>", "parameters": {"variants": [
        {"task_type": "style_transfer", "parameters": {"style": "watercolor"}},
        {"task_type": "style_transfer", "parameters": {"style": "pencil"}},
        {"task_type": "background_removal", "parameters": {"output": "rgba"}}]}},),
)
def comparison(data: ComparisonInput, ctx: JobContext) -> dict[str, Any]:
    params = data.parameters
    children = ctx.children()
    if children is None:  # first run: create the children and wait (nothing blocks)
        raw = ctx.read_input(data.image)
        specs = [ChildSpec(v.task_type, child_input(data.image, v), {data.image.artifact: raw})
                 for v in params.variants]
        return ctx.fan_out(specs, f"Waiting for {len(specs)} variants")
    if not all(c is None or c.status.is_terminal() for c in children):
        return Deferred(len(children), created=False)  # a redelivered first run: the last child calls back
    ctx.progress(99, "composing the grid")
    tiles: list[grid.Tile] = []
    infos: list[dict[str, Any]] = []
    if params.include_original:
        tiles.append(grid.Tile("original", image=ctx.read_input(data.image)))
        infos.append({"kind": "original", "label": "original"})
    for variant, child in zip(params.variants, children):
        tile, info = tile_for(ctx, variant, child)
        tiles.append(tile)
        infos.append(info)
    ctx.check_cancel()
    png, layout = grid.compose(tiles, params.tile_px, params.columns)
    ctx.save_artifact(GRID_NAME, png, "image/png")
    cells = layout.pop("cells")
    for info, cell in zip(infos, cells):
        info.update(cell)
    statuses = [i.get("status") for i in infos if i["kind"] == "variant"]
    return {
        "image_artifact": GRID_NAME,
        "grid": layout,
        "tiles": infos,
        "variants": {"total": len(statuses), "succeeded": statuses.count("SUCCESS"),
                     "failed": sum(s not in ("SUCCESS", "REVOKED") for s in statuses),
                     "cancelled": statuses.count("REVOKED")},
    }
