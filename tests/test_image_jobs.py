"""The image jobs through the HTTP API with real workers, checked on their pixels.

Pictures come from scikit-image (astronaut: a person with a face on a plain backdrop; coffee: no face;
lfw_subset: small real faces), so nothing is downloaded.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw
from skimage import data as samples

from pictures import png, b64, astronaut, coffee
from stack import modules_the_api_imports, poll, submit, wait_status

pytestmark = pytest.mark.slow  # mediapipe's models

TASKS = "/api/v1/tasks"


# --- pictures and helpers ------------------------------------------------------------------------


def lfw_face(index: int = 0, side: int = 256) -> np.ndarray:
    """A real face from scikit-image's LFW subset (25x25 grey), upscaled to ``side`` and made RGB."""
    grey = (samples.lfw_subset()[index] * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(grey).resize((side, side), Image.Resampling.BICUBIC).convert("RGB"))


def run(client: httpx.Client, task_type: str, **body: Any) -> dict[str, Any]:
    """Submit, wait, and return the seed-shaped result (with the decoded image as an array)."""
    task_id = submit(client, task_type, **body)
    status = wait_status(client, task_id, timeout_s=180)
    assert status["status"] == "SUCCESS", status
    r = client.get(f"{TASKS}/{task_id}/result/")
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()["result"]
    image = Image.open(io.BytesIO(base64.b64decode(result["image_data"])))
    assert image.format == "PNG"
    result["array"] = np.asarray(image)
    # The same picture is an artifact, downloadable at its URL.
    url = next(a["url"] for a in result["artifacts"] if a["name"] == result["image_artifact"])
    assert client.get(url).content == base64.b64decode(result["image_data"])
    return result


def fail(client: httpx.Client, task_type: str, **body: Any) -> dict[str, Any]:
    task_id = submit(client, task_type, **body)
    status = wait_status(client, task_id, timeout_s=180)
    assert status["status"] == "FAILURE", status
    return status


def refused(client: httpx.Client, field: str, **body: Any) -> dict[str, Any]:
    r = client.post(f"{TASKS}/submit/", json=body)
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["code"] == "validation_error" and field in {f["field"] for f in err["fields"]}, err
    return err  # type: ignore[no-any-return]


def edge_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """How well the edges of ``a`` and ``b`` line up: correlation of their gradient magnitudes, blurred a
    little so a painterly stroke beside an edge still counts as that edge."""
    from scipy.ndimage import gaussian_filter

    def grad(img: np.ndarray) -> np.ndarray:
        g = np.asarray(Image.fromarray(img).convert("L"), np.float32)
        gy, gx = np.gradient(g)
        return np.asarray(gaussian_filter(np.hypot(gx, gy), 2))

    return float(np.corrcoef(grad(a).ravel(), grad(b).ravel())[0, 1])


# --- background_removal --------------------------------------------------------------------------


def test_background_removal_person_keeps_subject_and_clears_corners(client):
    photo = astronaut()
    result = run(client, "background_removal", image=b64(png(photo)))
    out = result["array"]
    assert out.shape == (512, 512, 4)
    alpha = out[..., 3].astype(int)
    for corner in (alpha[:40, :40], alpha[:40, -40:]):  # the backdrop
        assert corner.max() <= 10, corner.max()
    assert alpha[150:210, 200:260].mean() > 240  # the face
    assert alpha[300:400, 150:350].mean() > 240  # the suit
    assert np.array_equal(out[200:210, 220:230, :3], photo[200:210, 220:230])  # the subject's own pixels
    meta = result["metadata"]
    assert meta["method"] == "mediapipe selfie segmentation" and meta["width"] == 512 and meta["format"] == "PNG"
    assert 0.2 < meta["foreground_fraction"] < 0.8
    assert set(meta["timings_ms"]) >= {"decode_ms", "inference_ms", "encode_ms", "total_ms"}


def test_background_removal_object_mask_and_colour_outputs(client):
    scene = np.full((200, 300, 3), 40, np.uint8)
    img = Image.fromarray(scene)
    ImageDraw.Draw(img).ellipse((90, 40, 210, 160), fill=(230, 50, 50))
    scene = np.asarray(img)
    mask = run(client, "background_removal", image=b64(png(scene)), parameters={"output": "mask"})
    m = mask["array"]
    assert m.ndim == 2 and mask["metadata"]["method"].startswith("grabcut")
    assert m[100, 150] == 255 and m[80:120, 130:170].min() > 200  # inside the disc
    assert m[:20, :20].max() < 10 and m[100, 40] < 10  # outside it

    coloured = run(client, "background_removal", image=b64(png(scene)),
                   parameters={"output": "color", "background_color": "#00ff00", "mode": "object"})
    c = coloured["array"]
    assert c.shape == (200, 300, 3)
    assert tuple(c[5, 5]) == (0, 255, 0) and tuple(c[100, 150]) == (230, 50, 50)


def test_background_removal_model_loads_once_per_worker(client):
    photo = png(astronaut()[::2, ::2].copy())
    first = run(client, "background_removal", image=b64(photo))["metadata"]["model_loads_in_process"]
    second = run(client, "background_removal", image=b64(photo))["metadata"]["model_loads_in_process"]
    assert first["selfie_segmenter"] == second["selfie_segmenter"] == 1
    assert first["face_detector"] == second["face_detector"] == 1


def test_background_removal_bad_parameters(client):
    image = b64(png(coffee()))
    refused(client, "parameters.output", task_type="background_removal", image=image, parameters={"output": "x"})
    refused(client, "parameters.background_color", task_type="background_removal", image=image,
            parameters={"output": "color", "background_color": "green"})
    refused(client, "image", task_type="background_removal")


# --- face_swap -----------------------------------------------------------------------------------


def test_face_swap_changes_the_face_and_nothing_far_from_it(client):
    target = astronaut()
    result = run(client, "face_swap", source_image=b64(png(lfw_face(0))), target_image=b64(png(target)))
    out = result["array"]
    assert out.shape == target.shape
    x, y, w, h = result["metadata"]["target_face_box"]
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 200  # the astronaut's face
    diff = np.abs(out.astype(int) - target.astype(int)).mean(axis=2)
    assert diff[y + h // 4:y + 3 * h // 4, x + w // 4:x + 3 * w // 4].mean() > 10
    for corner in (diff[:60, :60], diff[:60, -60:], diff[-60:, :60], diff[-60:, -60:]):
        assert corner.max() == 0
    assert result["metadata"]["faces_in_target"] == 1


def test_face_swap_without_a_face_fails_clearly_and_is_not_retried(client):
    faceless = b64(png(coffee()))
    status = fail(client, "face_swap", source_image=faceless, target_image=b64(png(astronaut())))
    assert "source_image" in status["error"] and "no face" in status["error"], status
    assert status["attempts"] == 1  # bad input: never retried
    status = fail(client, "face_swap", source_image=b64(png(lfw_face(1))), target_image=faceless)
    assert "target_image" in status["error"] and "no face" in status["error"], status
    status = fail(client, "face_swap", source_image=b64(png(lfw_face(1))), target_image=b64(png(astronaut())),
                  parameters={"target_face_index": 3})
    assert "target_image has 1 face" in status["error"], status


def test_face_swap_needs_both_images(client):
    refused(client, "target_image", task_type="face_swap", source_image=b64(png(lfw_face(2))))
    refused(client, "source_image", task_type="face_swap", target_image=b64(png(lfw_face(2))))


# --- object_removal ------------------------------------------------------------------------------


def scene_with_square() -> np.ndarray:
    scene = coffee().copy()
    scene[60:100, 120:160] = 255
    return scene


def bright_fraction(img: np.ndarray) -> float:
    return float((img[60:100, 120:160].min(axis=2) > 235).mean())


def test_object_removal_with_boxes_and_with_a_mask(client):
    scene = scene_with_square()
    assert bright_fraction(scene) == 1.0
    by_box = run(client, "object_removal", image=b64(png(scene)), parameters={"boxes": [[120, 60, 40, 40]]})
    assert bright_fraction(by_box["array"]) < 0.02
    assert np.array_equal(by_box["array"][:30, :30], scene[:30, :30])  # far from the box: untouched

    mask = np.zeros(scene.shape[:2], np.uint8)
    mask[58:102, 118:162] = 255
    by_mask = run(client, "object_removal", image=b64(png(scene)), mask=b64(png(mask)),
                  parameters={"method": "navier_stokes"})
    assert bright_fraction(by_mask["array"]) < 0.02
    assert by_mask["metadata"]["method"] == "opencv inpaint (navier_stokes)"


def test_object_removal_refuses_bad_regions_at_submit(client):
    image = b64(png(scene_with_square()))
    refused(client, "mask", task_type="object_removal", image=image, mask=b64(png(np.zeros((200, 300), np.uint8))))
    err = refused(client, "mask", task_type="object_removal", image=image,
                  mask=b64(png(np.full((100, 100), 255, np.uint8))))
    assert "100x100" in err["error"] and "300x200" in err["error"]
    refused(client, "mask", task_type="object_removal", image=image)
    refused(client, "parameters.boxes[0]", task_type="object_removal", image=image,
            parameters={"boxes": [[280, 10, 50, 50]]})
    refused(client, "parameters.boxes[0][3]", task_type="object_removal", image=image,
            parameters={"boxes": [[1, 2, 3]]})


# --- style_transfer ------------------------------------------------------------------------------


@pytest.mark.parametrize("style", ["pencil", "watercolor", "oil", "cartoon", "detail"])
def test_each_style_changes_the_picture_but_keeps_its_edges(client, style):
    photo = np.asarray(Image.fromarray(astronaut()).resize((256, 256)))
    out = run(client, "style_transfer", image=b64(png(photo)), parameters={"style": style})["array"]
    assert out.shape == photo.shape
    assert np.abs(out.astype(int) - photo.astype(int)).mean() > 5  # changed
    same = edge_correlation(out, photo)
    shifted = edge_correlation(out, np.roll(photo, 8, axis=1))
    assert same > 0.4 and same > 1.5 * shifted, (same, shifted)  # edges where they were, not 8 px off


def test_style_from_an_example_picture_takes_its_colours(client):
    photo = np.asarray(Image.fromarray(astronaut()).resize((256, 256)))
    style = np.zeros((128, 128, 3), np.uint8)
    style[..., 2] = np.linspace(60, 255, 128, dtype=np.uint8)[None, :]  # all blue
    result = run(client, "style_transfer", image=b64(png(photo)), style_image=b64(png(style)))
    out = result["array"].astype(float)
    assert out[..., 2].mean() > out[..., 0].mean() + 40 and out[..., 2].mean() > out[..., 1].mean() + 40
    assert edge_correlation(result["array"], photo) > 0.5
    half = run(client, "style_transfer", image=b64(png(photo)), style_image=b64(png(style)),
               parameters={"strength": 0.5})["array"].astype(float)
    assert np.abs(half - photo).mean() < np.abs(out - photo).mean()


def test_style_transfer_needs_exactly_one_style(client):
    image = b64(png(coffee()))
    refused(client, "parameters.style", task_type="style_transfer", image=image)
    refused(client, "parameters.style", task_type="style_transfer", image=image, style_image=image,
            parameters={"style": "oil"})
    refused(client, "parameters.style", task_type="style_transfer", image=image, parameters={"style": "vangogh"})


def test_catalog_lists_the_image_types_with_queues_and_presets(stack):
    types = {t["name"]: t for t in httpx.get(f"{stack.url}/api/v1/task-types", timeout=30).json()}
    assert {"background_removal", "face_swap", "object_removal", "style_transfer"} <= set(types)
    assert types["face_swap"]["queue"] == "gpu" and types["background_removal"]["queue"] == "cpu"
    assert set(types["style_transfer"]["options"]["styles"]) == {"pencil", "watercolor", "oil", "cartoon", "detail"}
    assert types["object_removal"]["file_inputs"] == ["image", "mask"]
    assert all(types[t]["available"] for t in ("background_removal", "face_swap", "object_removal"))


def test_files_as_multipart_uploads_work_too(client):
    scene = scene_with_square()
    mask = np.zeros(scene.shape[:2], np.uint8)
    mask[58:102, 118:162] = 255
    r = client.post(f"{TASKS}/submit/", data={"task_type": "object_removal"},
                    files={"image": ("scene.png", png(scene), "image/png"), "mask": ("mask.png", png(mask), "image/png")})
    assert r.status_code == 202, r.text
    assert wait_status(client, r.json()["task_id"], timeout_s=180)["status"] == "SUCCESS"
    out = client.get(f"{TASKS}/{r.json()['task_id']}/artifacts/result.png")
    assert out.status_code == 200 and bright_fraction(np.asarray(Image.open(io.BytesIO(out.content)))) < 0.02


def test_preload_loads_each_workers_own_models_at_start(make_stack):
    s = make_stack(env={"AITASKS_PRELOAD": "all"})
    with s.client() as c:
        meta = run(c, "background_removal", image=b64(png(astronaut()[::2, ::2].copy())))["metadata"]
    # Loaded when the pool process started, not by this job.
    assert meta["model_loads_in_process"] == {"selfie_segmenter": 1, "face_detector": 1}
    assert meta["timings_ms"]["model_ms"] < meta["timings_ms"]["total_ms"]
    # Each worker preloads on its own schedule: the gpu worker may still be loading when the cpu job ends.
    for name in ("worker-cpu", "worker-gpu"):
        poll(lambda n=name: "models preloaded" in s.workers[n].log_path.read_text(), f"{name} preloaded", 120)
    cpu_log = s.workers["worker-cpu"].log_path.read_text()
    gpu_log = s.workers["worker-gpu"].log_path.read_text()
    assert "models preloaded" in cpu_log and "background_removal" in cpu_log and "face_swap" not in cpu_log
    assert "models preloaded" in gpu_log and "face_swap" in gpu_log and "background_removal" not in gpu_log


def test_the_api_process_never_loads_the_image_libraries():
    assert modules_the_api_imports(("cv2", "numpy", "torch", "mediapipe", "diffusers")) == []


def test_large_inputs_are_scaled_down_and_the_result_says_so(client):
    wide = np.asarray(Image.fromarray(coffee()).resize((2600, 300)))
    result = run(client, "style_transfer", image=b64(png(wide)), parameters={"style": "detail"})
    meta = result["metadata"]
    assert meta["scaled_down"] is True
    assert (meta["original_width"], meta["original_height"]) == (2600, 300)
    assert (meta["width"], meta["height"]) == (2048, 236) == result["array"].shape[1::-1]


def test_face_swap_with_several_faces_takes_the_largest_or_the_one_asked_for(client):
    target = np.zeros((512, 800, 3), np.uint8)
    target[:, :512] = astronaut()
    target[156:412, 540:796] = lfw_face(5, 256)  # a bigger face than the astronaut's
    source = b64(png(lfw_face(8)))

    def changed(out: np.ndarray, box: list[int]) -> float:
        x, y, w, h = box
        return float(np.abs(out[y:y + h, x:x + w].astype(int) - target[y:y + h, x:x + w].astype(int)).mean())

    largest = run(client, "face_swap", source_image=source, target_image=b64(png(target)))
    second = run(client, "face_swap", source_image=source, target_image=b64(png(target)),
                 parameters={"target_face_index": 1})
    assert largest["metadata"]["faces_in_target"] == second["metadata"]["faces_in_target"] == 2
    big, small = largest["metadata"]["target_face_box"], second["metadata"]["target_face_box"]
    assert big[2] * big[3] > small[2] * small[3]
    assert changed(largest["array"], big) > 5 and changed(largest["array"], small) == 0
    assert changed(second["array"], small) > 5 and changed(second["array"], big) == 0
