"""Bad requests: each answers a 4xx JSON body naming the field and the reason, and accepts nothing."""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from stack import Stack, wait_status

TASKS = "/api/v1/tasks"
SUBMIT = f"{TASKS}/submit/"


# --- images --------------------------------------------------------------------------------------


def image_bytes(width: int, height: int, fmt: str = "PNG", noisy: bool = False) -> bytes:
    if noisy:
        img = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    else:
        img = Image.new("RGB", (width, height), (30, 120, 200))
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A small, valid PNG whose header (IHDR, with a correct CRC) claims other dimensions."""
    data = bytearray(image_bytes(8, 8))
    assert data[12:16] == b"IHDR"
    struct.pack_into(">II", data, 16, width, height)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def truncated_png() -> bytes:
    data = image_bytes(64, 64, noisy=True)
    return data[: len(data) // 2]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- the error shape -----------------------------------------------------------------------------


def check_error(r: httpx.Response, status: int, field: str, *reason: str) -> dict[str, Any]:
    """The shared error body: `error` a sentence naming the field, `fields` naming it with a reason."""
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert body["code"] == {400: "validation_error", 413: "payload_too_large"}[status], body
    assert isinstance(body["error"], str) and field in body["error"], body
    fields = {f["field"]: f["message"] for f in body["fields"]}
    assert field in fields, body
    for text in reason:
        assert text.lower() in fields[field].lower() + " " + body["error"].lower(), (text, body)
    return body  # type: ignore[no-any-return]


@dataclass
class Case:
    id: str
    send: Callable[[httpx.Client], httpx.Response]
    status: int
    field: str
    reason: tuple[str, ...] = ()


def post_json(body: Any) -> Callable[[httpx.Client], httpx.Response]:
    return lambda c: c.post(SUBMIT, json=body)


def post_raw(content: bytes, content_type: str | None) -> Callable[[httpx.Client], httpx.Response]:
    headers = {"Content-Type": content_type} if content_type else {}
    return lambda c: c.post(SUBMIT, content=content, headers=headers)


def post_form(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]] | None = None,
              ) -> Callable[[httpx.Client], httpx.Response]:
    return lambda c: c.post(SUBMIT, data=fields, files=files or {"none": ("", b"", "text/plain")}) \
        if files is None and False else c.post(SUBMIT, data=fields, files=files)


def diag(**body: Any) -> dict[str, Any]:
    return {"task_type": "diagnostic", **body}


GIF = image_bytes(20, 20, "GIF")
BMP = image_bytes(20, 20, "BMP")
NOT_AN_IMAGE = b"%PDF-1.4\n% this is a document, not a picture\n"

CASES = [
    # task_type
    Case("unknown-type", post_json({"task_type": "make_coffee"}), 400, "task_type", ("diagnostic", "make_coffee")),
    Case("type-not-a-string", post_json({"task_type": ["diagnostic"]}), 400, "task_type", "diagnostic"),
    Case("missing-type", post_json({"parameters": {"steps": 2}}), 400, "task_type", "required"),
    Case("missing-type-multipart", post_form({"parameters": "{}"}, {"image": ("a.png", image_bytes(8, 8), "image/png")}),
         400, "task_type", "required"),
    # parameters
    Case("param-wrong-type", post_json(diag(parameters={"steps": "many"})), 400, "parameters.steps", "integer"),
    Case("param-below-range", post_json(diag(parameters={"steps": 0})), 400, "parameters.steps",
         ("greater than or equal to 1",)),
    Case("param-above-range", post_json(diag(parameters={"duration_s": 3601})), 400, "parameters.duration_s",
         ("less than or equal to 3600",)),
    Case("param-not-in-enum", post_json(diag(parameters={"queue": "tpu"})), 400, "parameters.queue", ("cpu", "gpu")),
    Case("param-unknown", post_json(diag(parameters={"steps": 2, "colour": "red"})), 400, "parameters.colour",
         ("not a known field",)),
    Case("parameters-not-an-object", post_json(diag(parameters=[1, 2])), 400, "parameters", "dictionary"),
    Case("unknown-top-level-field", post_json(diag(prompt="a cat")), 400, "prompt", "not a known field"),
    Case("parameters-bad-json-multipart", post_form({"task_type": "diagnostic", "parameters": "{steps: 2"}),
         400, "parameters", "JSON"),
    Case("unknown-file-part", post_form({"task_type": "diagnostic"}, {"mask": ("m.png", image_bytes(8, 8), "image/png")}),
         400, "mask", "image"),
    # files
    Case("base64-malformed", post_json(diag(image="this is not base64!")), 400, "image", "base64"),
    Case("base64-data-uri-malformed", post_json(diag(image="data:image/png;base64,@@@@")), 400, "image", "base64"),
    Case("base64-not-a-string", post_json(diag(image=12345)), 400, "image", "base64"),
    Case("base64-empty", post_json(diag(image="")), 400, "image", "empty"),
    Case("not-an-image-base64", post_json(diag(image=b64(NOT_AN_IMAGE))), 400, "image", "not a readable image"),
    Case("not-an-image-multipart", post_form({"task_type": "diagnostic"}, {"image": ("doc.png", NOT_AN_IMAGE, "image/png")}),
         400, "image", "not a readable image"),
    Case("empty-file-multipart", post_form({"task_type": "diagnostic"}, {"image": ("e.png", b"", "image/png")}),
         400, "image", "not a readable image"),
    Case("gif-base64", post_json(diag(image=b64(GIF))), 400, "image", "unsupported image format GIF"),
    Case("bmp-multipart", post_form({"task_type": "diagnostic"}, {"image": ("x.bmp", BMP, "image/bmp")}),
         400, "image", "unsupported image format BMP"),
    Case("truncated-png-base64", post_json(diag(image=b64(truncated_png()))), 400, "image", "truncated"),
    Case("truncated-png-multipart", post_form({"task_type": "diagnostic"}, {"image": ("t.png", truncated_png(), "image/png")}),
         400, "image", "truncated"),
    Case("pixels-over-limit", post_json(diag(image=b64(png_claiming(5000, 4000)))), 413, "image", "pixels"),
    Case("decompression-bomb", post_form({"task_type": "diagnostic"},
                                         {"image": ("b.png", png_claiming(100_000, 100_000), "image/png")}),
         413, "image", "pixels"),
    # the body itself
    Case("invalid-json", post_raw(b'{"task_type": "diagnostic",', "application/json"), 400, "body", "JSON"),
    Case("empty-body", post_raw(b"", "application/json"), 400, "body", "empty"),
    Case("json-not-an-object", post_raw(b'["diagnostic"]', "application/json"), 400, "body", "object"),
    Case("content-type-xml", post_raw(b"<task type='diagnostic'/>", "application/xml"), 400, "body", "JSON"),
    Case("content-type-image", post_raw(image_bytes(8, 8), "image/png"), 400, "body", "JSON"),
    Case("multipart-without-boundary", post_raw(b'{"task_type": "diagnostic"}', "multipart/form-data"),
         400, "body", "multipart"),
    Case("multipart-garbage", post_raw(b"garbage", "multipart/form-data; boundary=xyz"), 400, "body", "multipart"),
    # headers
    Case("prefer-wait-over-max", lambda c: c.post(SUBMIT, json=diag(), headers={"Prefer": "wait=3600"}),
         400, "Prefer", "at most 60"),
    Case("idempotency-key-too-long", lambda c: c.post(SUBMIT, json=diag(), headers={"Idempotency-Key": "k" * 256}),
         400, "Idempotency-Key", "255"),
    # list filters and query values
    Case("list-status-bogus", lambda c: c.get(f"{TASKS}/", params={"status": "SUCCESS,DONE"}), 400, "status",
         ("PENDING", "REVOKED")),
    Case("list-limit-zero", lambda c: c.get(f"{TASKS}/", params={"limit": 0}), 400, "limit", "greater than"),
    Case("list-limit-too-big", lambda c: c.get(f"{TASKS}/", params={"limit": 201}), 400, "limit", "less than"),
    Case("list-limit-not-a-number", lambda c: c.get(f"{TASKS}/", params={"limit": "ten"}), 400, "limit",
         ("integer",)),
    Case("list-cursor-not-utf8", lambda c: c.get(f"{TASKS}/", params={"cursor": b64(b"\xff\xfe\xfd")}), 400, "cursor",
         ("cursor",)),
    Case("list-cursor-not-ours", lambda c: c.get(f"{TASKS}/", params={"cursor": b64(b"yesterday:abc")}), 400,
         "cursor", "cursor"),
    Case("result-inline-not-a-bool", lambda c: c.get(f"{TASKS}/00000000-0000-4000-8000-000000000000/result/",
                                                     params={"inline": "maybe"}), 400, "inline", "boolean"),
]


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> Iterator[httpx.Client]:
    """One tenant for the whole module, so the last test can check that nothing was accepted."""
    with stack.client(timeout=60) as c:
        yield c


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_request_names_the_field_and_reason(tenant, case):
    check_error(case.send(tenant), case.status, case.field, *case.reason)


def test_several_errors_are_all_named(tenant):
    r = tenant.post(SUBMIT, json=diag(parameters={"steps": 0, "duration_s": -1, "fail": "sometimes"}))
    body = check_error(r, 400, "parameters.duration_s")  # the summary names the first, in declaration order
    assert {f["field"] for f in body["fields"]} == {"parameters.steps", "parameters.duration_s", "parameters.fail"}
    assert "(and 2 more)" in body["error"]


def test_after_all_that_nothing_was_accepted_and_the_service_works(tenant):
    r = tenant.get(f"{TASKS}/")
    assert r.status_code == 200 and r.json() == {"tasks": [], "next_cursor": None}, r.text
    image = image_bytes(50, 40)
    r = tenant.post(SUBMIT, data={"task_type": "diagnostic", "parameters": json.dumps({"steps": 2})},
                    files={"image": ("ok.png", image, "image/png")})
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    assert wait_status(tenant, task_id)["status"] == "SUCCESS"
    result = tenant.get(f"{TASKS}/{task_id}/result/").json()["result"]
    assert result["image"]["width"] == 50 and result["image"]["height"] == 40
    assert [t["task_id"] for t in tenant.get(f"{TASKS}/").json()["tasks"]] == [task_id]


# --- limits, on a deployment with small ones ----------------------------------------------------

MAX_BYTES = 100_000
MAX_PIXELS = 50_000


@pytest.mark.slow  # its own stack
def test_size_and_pixel_limits(make_stack):
    s = make_stack(env={"AITASKS_MAX_UPLOAD_BYTES": str(MAX_BYTES), "AITASKS_MAX_IMAGE_PIXELS": str(MAX_PIXELS)})
    info = next(t for t in httpx.get(f"{s.url}/api/v1/task-types", timeout=30).json() if t["name"] == "diagnostic")
    assert info["limits"]["max_upload_bytes"] == MAX_BYTES and info["limits"]["max_image_pixels"] == MAX_PIXELS

    big_file = image_bytes(200, 180, noisy=True)  # 36 000 pixels, but over 100 000 bytes
    assert MAX_BYTES < len(big_file) < MAX_BYTES * 1.2
    wide = image_bytes(300, 200)  # a small file, but 60 000 pixels
    assert len(wide) < MAX_BYTES // 10
    with s.client(timeout=60) as c:
        # A body over the limit, declared in Content-Length and sent chunked without one.
        huge = json.dumps(diag(parameters={"steps": 1}, prompt="x" * 300_000)).encode()
        check_error(c.post(SUBMIT, content=huge, headers={"Content-Type": "application/json"}), 413, "body",
                    "limit")

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(huge), 16_384):
                yield huge[start:start + 16_384]

        check_error(c.post(SUBMIT, content=chunks(), headers={"Content-Type": "application/json"}), 413, "body",
                    "limit")
        # A file over the limit, in a body that is not.
        check_error(c.post(SUBMIT, json=diag(image=b64(big_file))), 413, "image", str(MAX_BYTES))
        check_error(c.post(SUBMIT, data={"task_type": "diagnostic"}, files={"image": ("big.png", big_file, "image/png")}),
                    413, "image", str(MAX_BYTES))
        # An image over the pixel limit, refused from its header.
        check_error(c.post(SUBMIT, json=diag(image=b64(wide))), 413, "image", "pixels")
        check_error(c.post(SUBMIT, data={"task_type": "diagnostic"}, files={"image": ("w.png", wide, "image/png")}),
                    413, "image", "pixels")
        check_error(c.post(SUBMIT, json=diag(image=b64(png_claiming(224, 224)))), 413, "image", "pixels")

        assert c.get(f"{TASKS}/").json()["tasks"] == []
        # Just under both limits is fine.
        fits = image_bytes(220, 220)
        r = c.post(SUBMIT, json=diag(image=b64(fits)))
        assert r.status_code == 202, r.text
        assert wait_status(c, r.json()["task_id"])["status"] == "SUCCESS"
        assert [t["task_id"] for t in c.get(f"{TASKS}/").json()["tasks"]] == [r.json()["task_id"]]


def test_nothing_here_writes_files_for_refused_requests(tenant, stack):
    """Refused uploads leave no job folders behind (inputs are stored only once a job is accepted)."""
    artifacts = Path(stack.env()["AITASKS_DATA_DIR"]) / "artifacts"
    before = {p.name for p in artifacts.iterdir()} if artifacts.is_dir() else set()
    for send in (post_json(diag(image=b64(truncated_png()), parameters={"steps": 0})),
                 post_json(diag(image=b64(png_claiming(5000, 4000))))):
        assert send(tenant).status_code in (400, 413)
    after = {p.name for p in artifacts.iterdir()} if artifacts.is_dir() else set()
    assert after == before
