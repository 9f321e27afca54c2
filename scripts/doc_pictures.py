"""Make the before/after pictures of docs/jobs.md with a running service, over its HTTP API.

    make run                                  # in one terminal; note the key it prints
    .venv/bin/python scripts/doc_pictures.py --url http://127.0.0.1:8000 --key ait_...

Inputs are pictures scikit-image ships (astronaut, coffee, an LFW face), so anyone can rebuild them.
Every "after" picture is the service's own result, downloaded from the job's artifact URL.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from skimage import data as samples

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"
SIDE = 256  # pictures in the docs are kept small


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def small(array: np.ndarray, side: int = SIDE) -> np.ndarray:
    img = Image.fromarray(array)
    img.thumbnail((side, side), Image.Resampling.LANCZOS)
    return np.asarray(img)


def save(name: str, raw: bytes) -> None:
    img = Image.open(io.BytesIO(raw))
    img.thumbnail((SIDE, SIDE), Image.Resampling.LANCZOS)
    img.save(OUT / name, "PNG", optimize=True)
    print(f"  {OUT / name}")


def run_job(client: httpx.Client, body: dict[str, Any]) -> bytes:
    """Submit and wait (Prefer: wait) for the job; the result picture's bytes."""
    r = client.post("/api/v1/tasks/submit/", json=body, headers={"Prefer": "wait=60"}, timeout=90)
    if r.status_code != 200 or r.json().get("status") != "SUCCESS":
        raise SystemExit(f"{body['task_type']} did not succeed: {r.status_code} {r.text[:500]}")
    result = r.json()["result"]
    url = next(a["url"] for a in result["artifacts"] if a["name"] == result["image_artifact"])
    return client.get(url).content


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default=os.environ.get("AITASKS_URL", "http://127.0.0.1:8000"))
    p.add_argument("--key", default=os.environ.get("AITASKS_KEY"), required="AITASKS_KEY" not in os.environ)
    args = p.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731

    astronaut = small(samples.astronaut(), 384)
    coffee = small(samples.coffee(), 384)
    face = np.asarray(Image.fromarray((samples.lfw_subset()[0] * 255).astype(np.uint8))
                      .resize((256, 256), Image.Resampling.BICUBIC).convert("RGB"))
    cup = coffee.copy()
    h, w = cup.shape[:2]
    cup[h // 8:h // 8 + 40, w // 20:w // 20 + 40] = (255, 255, 255)  # a white square to remove

    with httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {args.key}"}, timeout=60) as c:
        print("inputs")
        save("astronaut.png", png(astronaut))
        save("coffee.png", png(coffee))
        save("face.png", png(face))
        save("coffee-square.png", png(cup))
        print("results")
        save("background_removal-rgba.png", run_job(c, {"task_type": "background_removal", "image": b64(png(astronaut))}))
        save("background_removal-object.png", run_job(c, {"task_type": "background_removal", "image": b64(png(coffee)),
                                                          "parameters": {"output": "color", "background_color": "#3060c0"}}))
        save("face_swap.png", run_job(c, {"task_type": "face_swap", "source_image": b64(png(face)),
                                          "target_image": b64(png(astronaut))}))
        save("object_removal.png", run_job(c, {"task_type": "object_removal", "image": b64(png(cup)),
                                               "parameters": {"boxes": [[w // 20, h // 8, 40, 40]]}}))
        for style in ("pencil", "watercolor", "oil", "cartoon", "detail"):
            save(f"style_transfer-{style}.png", run_job(c, {"task_type": "style_transfer", "image": b64(png(astronaut)),
                                                            "parameters": {"style": style}}))
        save("style_transfer-example.png", run_job(c, {"task_type": "style_transfer", "image": b64(png(astronaut)),
                                                       "style_image": b64(png(coffee))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
