"""``image_generation``: text to image with a local diffusers pipeline (e.g. Stable Diffusion 1.5).

The model is a folder in diffusers' ``save_pretrained`` layout named by ``AITASKS_IMAGE_MODEL_DIR``;
without one the type is listed as unavailable and submits answer 503. It loads once per worker
process (first job, or at start with ``AITASKS_PRELOAD=image_generation``) and runs on CUDA in
float16 when there is a GPU, else on the CPU. The prompt is expanded by a fixed rule
(:mod:`aitasks.processors.image.prompts`) unless ``refine`` is false. See docs/models.md.

torch and diffusers are imported inside the functions: the API process imports this module for
validation and the catalog and must stay light.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from aitasks.errors import JobError
from aitasks.processors.image import models, prompts, timing
from aitasks.processors.image.result import image_result
from aitasks.processors.registry import job_type
from aitasks.settings import Settings, get_settings
from aitasks.worker.context import JobContext

MIN_SIDE, MAX_SIDE, SIDE_STEP = 64, 1024, 8
MAX_SEED = 2**32 - 1


def _side(value: int) -> int:
    if not (MIN_SIDE <= value <= MAX_SIDE and value % SIDE_STEP == 0):
        raise ValueError(f"must be a multiple of {SIDE_STEP} from {MIN_SIDE} to {MAX_SIDE} (got {value})")
    return value


Side = Annotated[
    int,
    AfterValidator(_side),
    Field(json_schema_extra={"minimum": MIN_SIDE, "maximum": MAX_SIDE, "multipleOf": SIDE_STEP}),
]


class GenerationParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width: Side = Field(512, description=f"Image width in pixels: a multiple of {SIDE_STEP}, "
                                         f"{MIN_SIDE} to {MAX_SIDE}.")
    height: Side = Field(512, description=f"Image height in pixels: a multiple of {SIDE_STEP}, "
                                          f"{MIN_SIDE} to {MAX_SIDE}.")
    steps: int = Field(30, ge=1, le=150, description="Denoising steps: more is slower and usually finer.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Random seed: the same seed, prompt and "
                             "parameters give the same image. None: a random one, reported in the result.")
    negative_prompt: str | None = Field(None, max_length=2000, description="What to steer away from. None: "
                                        "a default list of defects when refine is true, nothing otherwise.")
    guidance_scale: float = Field(7.5, ge=0, le=30, description="How closely to follow the prompt "
                                  "(classifier-free guidance; 1 or less turns it and the negative prompt off).")
    style: prompts.StyleName | None = Field(None, description="A style preset whose terms are added to "
                                            "the prompt (even when refine is false).")
    refine: bool = Field(True, description="Add the quality terms to the prompt and use the default "
                         "negative prompt; false sends the prompt (and style terms) only.")


class GenerationInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=2000, description="What to draw.")
    parameters: GenerationParameters = Field(default_factory=GenerationParameters)

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


def unavailable(settings: Settings) -> str | None:
    """Why this deployment cannot generate images (no model folder), or None."""
    folder = settings.image_model_dir
    if folder is None:
        return ("AITASKS_IMAGE_MODEL_DIR is not set: point it at a diffusers text-to-image folder "
                "(e.g. Stable Diffusion 1.5 saved with save_pretrained; see docs/models.md)")
    if not folder.is_dir():
        return f"AITASKS_IMAGE_MODEL_DIR={folder} is not a directory"
    if not (folder / "model_index.json").is_file():
        return f"AITASKS_IMAGE_MODEL_DIR={folder} is not a diffusers folder (it has no model_index.json)"
    return None


def _model_dir() -> Path:
    settings = get_settings()
    reason = unavailable(settings)
    if reason:
        raise JobError(f"image_generation is not available on this worker: {reason}")
    assert settings.image_model_dir is not None
    return settings.image_model_dir


def preload() -> Any:
    return models.diffusion_pipeline(str(_model_dir()))


@job_type(
    "image_generation",
    input=GenerationInput,
    queue="gpu",
    description="Text to image with a local Stable Diffusion (diffusers) model: prompt refinement, seed "
                "for repeatable results, per-step progress. Needs AITASKS_IMAGE_MODEL_DIR.",
    soft_time_limit_s=900,
    time_limit_s=960,
    max_retries=0,  # a failure here (out of memory, a broken model folder) fails the same way again
    preload=preload,
    unavailable=unavailable,
    catalog={"styles": list(prompts.STYLES), "quality_terms": list(prompts.QUALITY_TERMS),
             "default_negative_prompt": prompts.DEFAULT_NEGATIVE_PROMPT},
    examples=(
        {"task_type": "image_generation", "prompt": "a lighthouse on a cliff at sunset",
         "parameters": {"width": 512, "height": 512, "steps": 30, "seed": 42, "style": "photo"}},
        {"task_type": "image_generation", "prompt": "a fox in the snow",
         "parameters": {"style": "watercolor", "width": 768, "height": 512}},
    ),
)
def image_generation(data: GenerationInput, ctx: JobContext) -> dict[str, Any]:
    import torch

    p = data.parameters
    watch = timing.Stopwatch()
    seed = p.seed if p.seed is not None else secrets.randbelow(MAX_SEED + 1)
    prompt_used = prompts.refine_prompt(data.prompt, p.style, quality=p.refine)
    negative = p.negative_prompt
    if negative is None and p.refine:
        negative = prompts.DEFAULT_NEGATIVE_PROMPT
    watch.lap("prompt")
    ctx.progress(2, "prompt refined" if p.refine else "prompt ready")

    folder = _model_dir()
    loads_before = models.LOADS["diffusion_pipeline"]
    ctx.progress(5, "loading model")
    try:
        pipe = models.diffusion_pipeline(str(folder))
    except Exception as exc:  # a broken or incomplete folder: permanent, and the message says which
        raise JobError(f"cannot load the model in {folder}: {exc}") from exc
    loaded_now = models.LOADS["diffusion_pipeline"] > loads_before
    watch.lap("model_load" if loaded_now else "model_cached")
    ctx.progress(10, "model ready")

    def on_step_end(_pipe: Any, step: int, _timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
        done = step + 1
        if done == p.steps:
            watch.lap("denoise")
        ctx.progress(10 + 85 * done / p.steps, f"denoising step {done}/{p.steps}")  # raises if cancelled
        return tensors

    output = pipe(
        prompt=prompt_used,
        negative_prompt=negative,
        width=p.width,
        height=p.height,
        num_inference_steps=p.steps,
        guidance_scale=p.guidance_scale,
        generator=torch.Generator("cpu").manual_seed(seed),
        output_type="pil",
        callback_on_step_end=on_step_end,
    )
    watch.lap("decode")
    image = output.images[0]
    flagged = getattr(output, "nsfw_content_detected", None)  # only with a safety checker in the folder
    import numpy as np

    result = image_result(
        ctx, watch, np.asarray(image.convert("RGB")), None,
        width=image.width, height=image.height, steps=p.steps, seed=seed, guidance_scale=p.guidance_scale,
        style=p.style, negative_prompt=negative, model=folder.name, model_loads_in_process=models.loads(),
        model_loaded_by_this_job=loaded_now, safety_flagged=bool(flagged and flagged[0]),
        device=str(pipe.device), dtype=str(pipe.dtype).removeprefix("torch."),
    )
    return {**result, "prompt_used": prompt_used}
