"""``face_swap``: put the face of ``source_image`` onto the face in ``target_image``.

mediapipe face mesh landmarks, a triangulated warp of the source face onto the target's landmarks,
Lab colour matching and seamless (Poisson) blending; see ``faces``. No face in an image: FAILURE naming
the image, never retried.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from aitasks.jobs.files import ImageFile
from aitasks.processors.image import codec, faces, models
from aitasks.processors.image.result import image_result
from aitasks.processors.image.timing import Stopwatch
from aitasks.processors.registry import job_type
from aitasks.worker.context import JobContext

MAX_SIDE = 2048


class FaceSwapParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_face_index: int = Field(0, ge=0, le=7, description="Which face of target_image, 0 = the largest.")
    source_face_index: int = Field(0, ge=0, le=7, description="Which face of source_image, 0 = the largest.")
    blend: float = Field(1.0, ge=0.0, le=1.0, description="1 = the swapped face; lower keeps some of the target.")


class FaceSwapInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source_image: ImageFile = Field(description="The face to use.")
    target_image: ImageFile = Field(description="The picture the face goes into.")
    parameters: FaceSwapParameters = Field(default_factory=FaceSwapParameters)


def preload() -> None:
    models.face_mesh()


@job_type(
    "face_swap", input=FaceSwapInput, queue="gpu", soft_time_limit_s=240, time_limit_s=300,
    description="Put the face of source_image onto the (largest) face in target_image.",
    preload=preload,
    examples=({"task_type": "face_swap", "source_image": "<base64>", "target_image": "<base64>",
               "parameters": {"target_face_index": 0}},),
)
def face_swap(data: FaceSwapInput, ctx: JobContext) -> dict[str, Any]:
    params = data.parameters
    clock = Stopwatch()
    source = codec.decode_rgb(ctx.read_input(data.source_image), "source_image", max_side=MAX_SIDE)
    target = codec.decode_rgb(ctx.read_input(data.target_image), "target_image", max_side=MAX_SIDE)
    clock.lap("decode")
    ctx.progress(10, "images decoded")
    preload()
    clock.lap("model")
    ctx.progress(20, "model ready")
    target_faces = faces.find_faces(target.rgb)
    dst = faces.pick(target_faces, params.target_face_index, "target_image")
    ctx.progress(40, f"{len(target_faces)} face(s) in target_image")
    source_faces = faces.find_faces(source.rgb)
    src = faces.pick(source_faces, params.source_face_index, "source_image")
    clock.lap("landmarks")
    ctx.progress(60, f"{len(source_faces)} face(s) in source_image")
    out = faces.swap(source.rgb, src, target.rgb, dst, params.blend)
    clock.lap("swap")
    ctx.progress(85, "face swapped and blended")
    return image_result(
        ctx, clock, out, target, source=source.metadata(),
        method="mediapipe face mesh + Delaunay warp + Lab colour match + seamless clone",
        faces_in_target=len(target_faces), faces_in_source=len(source_faces), target_face_box=list(dst.box),
        source_face_box=list(src.box), model_loads_in_process=models.loads())
