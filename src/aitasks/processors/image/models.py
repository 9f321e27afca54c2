"""The image models, each loaded once per worker process on first use (or at start, AITASKS_PRELOAD).

Every loader is cached per process: the second job of a type finds its model ready. ``LOADS`` counts
real loads so tests and results can prove it (``model_loads_in_process`` in each result's metadata).
All weights come from installed packages or a local folder: nothing is downloaded at run time.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from aitasks.logs import native_stderr_to_log

# A missing file must fail at once, not wait on a network that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

LOADS: Counter[str] = Counter()
LOAD_MS: dict[str, float] = {}
T = TypeVar("T")


def loader(name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Cache a model loader per process and per argument, counting and timing the real loads."""

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.cache
        def cached(*args: Any) -> T:
            started = time.perf_counter()
            model = fn(*args)
            LOADS[name] += 1
            LOAD_MS[name] = round((time.perf_counter() - started) * 1000, 1)
            return model

        functools.update_wrapper(cached, fn)
        return cached

    return decorate


def quiet_mediapipe() -> None:
    # protobuf warns once at first use inside mediapipe; harmless, and not ours to fix.
    warnings.filterwarnings("ignore", message=r".*SymbolDatabase\.GetPrototype\(\) is deprecated.*")


def mediapipe_solution(build: Callable[[], T]) -> T:
    """Build a mediapipe solution with its native start-up lines (TFLite's XNNPACK notice, absl's W0000
    feedback-manager lines) sent to the debug log. Its graph threads print them as the calculators open,
    after the constructor returns: wait for the graph to go idle inside the filter."""
    quiet_mediapipe()
    with native_stderr_to_log("mediapipe"):
        solution = build()
        graph = getattr(solution, "_graph", None)
        if graph is not None:
            graph.wait_until_idle()
    return solution


@loader("selfie_segmenter")
def selfie_segmenter() -> Any:
    """mediapipe's selfie segmentation (general model), carried in the mediapipe wheel."""
    import mediapipe as mp

    return mediapipe_solution(lambda: mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0))


@loader("face_detector")
def face_detector() -> Any:
    """mediapipe's full-range face detector: finds faces the mesh misses (small, turned)."""
    import mediapipe as mp

    return mediapipe_solution(
        lambda: mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5))


@loader("face_mesh")
def face_mesh() -> Any:
    """mediapipe's face mesh: 478 landmarks per face, up to 8 faces."""
    import mediapipe as mp

    return mediapipe_solution(lambda: mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=8, refine_landmarks=True, min_detection_confidence=0.5))


@loader("diffusion_pipeline")
def diffusion_pipeline(model_dir: str) -> Any:
    """A diffusers text-to-image pipeline from a local folder (save_pretrained layout), CPU or GPU."""
    import torch
    from diffusers import AutoPipelineForText2Image

    folder = Path(model_dir)
    options: dict[str, Any] = {"local_files_only": True}
    index = folder / "model_index.json"
    if not (index.is_file() and '"safety_checker"' in index.read_text()):
        options["safety_checker"] = None  # a folder without one: never fetch one
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        options["torch_dtype"] = torch.float16
    pipe = AutoPipelineForText2Image.from_pretrained(str(folder), **options)
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def loads() -> dict[str, int]:
    return dict(LOADS)
