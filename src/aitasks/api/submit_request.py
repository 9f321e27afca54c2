"""The HTTP side of submitting: read a submit request into the submit service's fields, and wait.

Used by every submit route that speaks the seeds' request shape (``POST /api/v1/tasks/submit/`` and
seed 003's paths); ``submit_doc`` is the one place their request OpenAPI is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from aitasks.api import stream_slots
from aitasks.api.deps import is_admin
from aitasks.api.services import Services
from aitasks.api.submission import Accepted, SubmitOptions, submit
from aitasks.api.views import base_url, prefer_wait_s, wait_for_end
from aitasks.errors import FieldError, ValidationFailed
from aitasks.jobs.models import Job
from aitasks.processors.registry import load_all

MAX_IDEMPOTENCY_KEY = 255
FILE_FIELDS = ("image", "source_image", "target_image", "mask", "style_image")


@dataclass
class Submitted:
    accepted: Accepted
    final: Job | None  # the finished record, when the submit waited and the job ended in time
    wait_s: float | None
    preferred: bool  # the wait came from a Prefer header (answered with Preference-Applied)
    inline: bool = True  # a waiting submit's image result inlined as base64 (``?inline=false``: not)


async def submit_request(request: Request, services: Services, tenant: str,
                         task_type: str | None = None) -> Submitted:
    """Read a submit request, submit it, and wait for it when asked. ``task_type`` fixes the type (a seed
    path that submits one type); otherwise the body names it."""
    key = idempotency_key(request.headers.get("idempotency-key"))
    wait_s, preferred = wait_seconds(request, services)
    inline = inline_result(request)  # checked before anything is accepted, as the wait is
    fields, uploads = await read_payload(request)
    named = fields.pop("task_type", None)
    if task_type is not None and named not in (None, "", task_type):
        raise ValidationFailed(f"task_type must be {task_type} on this path (or left out)",
                               [FieldError("task_type", f"must be {task_type} or absent")])
    options = SubmitOptions(idempotency_key=key, base_url=base_url(services, request), admin=is_admin(request))
    async with stream_slots.slot(services, tenant, wanted=wait_s is not None):  # a waiting submit: max_streams
        accepted = await submit(services, tenant, task_type or named, fields, uploads, options)
        final = await wait_for_end(services, tenant, accepted.job.id, wait_s) if wait_s is not None else None
    return Submitted(accepted, final, wait_s, preferred, inline)


async def read_payload(request: Request) -> tuple[dict[str, Any], dict[str, UploadFile]]:
    """The request's fields and uploaded files, from JSON or multipart."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        try:
            form = await request.form(max_files=20, max_fields=200)
        except HTTPException as exc:  # malformed multipart: answer in the shared error shape
            if exc.status_code != 400:
                raise
            raise ValidationFailed(f"request body is not valid {content_type} ({exc.detail})",
                                   [FieldError("body", f"is not valid {content_type}")]) from None
        fields: dict[str, Any] = {}
        uploads: dict[str, UploadFile] = {}
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                uploads[name] = value
            elif name == "parameters":
                try:
                    fields[name] = orjson.loads(value) if value.strip() else {}
                except orjson.JSONDecodeError:
                    raise ValidationFailed("parameters is not valid JSON",
                                           [FieldError("parameters", "must be a JSON object")]) from None
            else:
                fields[name] = value
        return fields, uploads
    return await json_object(request, "send a JSON object with task_type"), {}


async def json_object(request: Request, hint: str) -> dict[str, Any]:
    """The body as a JSON object, or a 400 naming ``body``."""
    body = await request.body()
    if not body.strip():
        raise ValidationFailed(f"request body is empty; {hint}", [FieldError("body", "is empty")])
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed(f"request body is not valid JSON ({exc.msg})",
                               [FieldError("body", "is not valid JSON")]) from None
    if not isinstance(payload, dict):
        raise ValidationFailed(f"request body must be a JSON object; {hint}",
                               [FieldError("body", "must be an object")])
    return payload


def idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.strip() or len(value) > MAX_IDEMPOTENCY_KEY:
        raise ValidationFailed(f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters",
                               [FieldError("Idempotency-Key", f"must be 1-{MAX_IDEMPOTENCY_KEY} characters")])
    return value


def _flag(request: Request, name: str) -> bool:
    """A true/false query parameter (default true)."""
    raw = request.query_params.get(name)
    if raw is None or raw.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if raw.strip().lower() in ("false", "0", "no", "off"):
        return False
    raise ValidationFailed(f"{name} must be true or false", [FieldError(name, "must be true or false")])


def async_processing(request: Request) -> bool:
    """Seed 003's ``?async_processing=true|false`` (default true), documented in ``submit_doc``."""
    return _flag(request, "async_processing")


def inline_result(request: Request) -> bool:
    """``?inline=false``: a waiting submit's result names its image file without inlining it as base64
    (as ``GET .../result/?inline=false``); the client fetches the file from its URL."""
    return _flag(request, "inline")


def wait_seconds(request: Request, services: Services) -> tuple[float | None, bool]:
    """How long a submit waits for its job, and whether ``Prefer: wait`` asked for it; ``None``: no wait.
    ``?async_processing=false`` is seed 003's spelling of the same waiting submit, bounded by AITASKS_SYNC_WAIT_S."""
    wait_s = prefer_wait_s(request.headers.get("prefer"), services.settings.max_wait_s)
    if wait_s is not None:
        return wait_s, True
    return (None if async_processing(request) else services.settings.sync_wait_s), False


# --- the request's OpenAPI, for every submit route of this shape -----------------------------------

ASYNC_PROCESSING: dict[str, Any] = {
    "name": "async_processing", "in": "query", "required": False, "schema": {"type": "boolean", "default": True},
    "description": "Seed 003: `false` waits for the job as `Prefer: wait` does, up to AITASKS_SYNC_WAIT_S "
                   "(default 30 s): `200` with the result, or `202` when it takes longer.",
}
INLINE: dict[str, Any] = {
    "name": "inline", "in": "query", "required": False, "schema": {"type": "boolean", "default": True},
    "description": "For a waiting submit: `false` leaves an image result's base64 `image_data` out of the "
                   "`200` (fetch the file from its `url` in the result's `artifacts`).",
}
HEADERS: list[dict[str, Any]] = [
    {"name": "Idempotency-Key", "in": "header", "required": False,
     "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "\\S"},
     "description": "The same key from the same tenant within the retention time returns the first task "
                    "(200) instead of creating another."},
    {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "`wait=N` (N <= 60): answer when the job ends or N seconds pass."},
]
WEBHOOK_PROPERTIES: dict[str, Any] = {
    "webhook": {"type": "string", "format": "uri", "description": "POST the job's status document here (signed)."},
    "webhook_events_filter": {"type": "array", "minItems": 1,
                              "items": {"type": "string", "enum": ["start", "progress", "completed"]},
                              "description": "Which changes to send; default [\"completed\"]. Only with `webhook`."},
}
# A filter names the events of a webhook: without one it is refused (400), as the schema says.
WEBHOOK_DEPENDENCY: dict[str, Any] = {"dependentRequired": {"webhook_events_filter": ["webhook"]}}


# The catalog's examples name their files and ids by placeholders ("<base64>"); the OpenAPI's examples are
# requests a client (or the fuzzer) can send as they are: a small PNG, a well-formed job id.
EXAMPLE_PNG = ("iVBORw0KGgoAAAANSUhEUgAAACAAAAAgCAIAAAD8GO2jAAAAK0lEQVR42u3NQQEAQAQAMC6NiCKKdSX4bQWW0xWXXhwTCAQCgUAgE"
               "AgEWz6b/gGoTIbtSQAAAABJRU5ErkJggg==")
EXAMPLE_ID = "5b0d6a1e-3f7c-4a53-9a59-2d0f9f3b1f10"


def runnable_example(value: Any, key: str = "") -> Any:
    """A catalog example with its placeholders filled: files as a PNG, anything else as a job id."""
    if isinstance(value, dict):
        return {k: runnable_example(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [runnable_example(v, key) for v in value]
    if isinstance(value, str) and value.startswith("<") and value.endswith(">"):
        return EXAMPLE_PNG if key in FILE_FIELDS else EXAMPLE_ID
    return value


# Parts sent as JSON text (the server parses `parameters` as JSON): described as the object they carry.
JSON_PARTS = {"parameters": {"contentType": "application/json"}}


def _type_bodies(input_schema: dict[str, Any], task_type: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON and multipart bodies of a path that submits one type: its input's top-level fields (the
    nested ones, e.g. ``parameters``, as objects: their schema is the type's ``input_schema``), the webhook
    fields, and no other field."""
    top: dict[str, Any] = {}
    for name, prop in input_schema.get("properties", {}).items():
        nested = "$ref" in orjson.dumps(prop).decode()
        top[name] = {"type": "object", "description": f"See `{task_type}`'s input_schema."} if nested else prop
    required = list(input_schema.get("required", []))
    described = f"The `{task_type}` job's input, as `input_schema` of `GET /api/v1/task-types` describes it."
    json_schema = {"type": "object", "description": described, "required": required, "additionalProperties": False,
                   "properties": {**top, **WEBHOOK_PROPERTIES}, **WEBHOOK_DEPENDENCY}
    form_props = {name: ({"type": "string", "format": "binary"} if name in FILE_FIELDS else prop)
                  for name, prop in top.items()}
    form = {"type": "object", "description": "Files as parts, `parameters` as a JSON string.", "required": required,
            "additionalProperties": False, "properties": {**form_props, "webhook": WEBHOOK_PROPERTIES["webhook"]}}
    return json_schema, form


def submit_doc(task_type: str | None = None) -> dict[str, Any]:
    """``openapi_extra`` of a submit route: its body (JSON with base64 files, or multipart with files as
    parts) and headers. ``task_type`` set: a path that submits only that type, documented by its input.

    Each type's own fields (its ``parameters``, which files it takes) are its ``input_schema`` in
    ``GET /api/v1/task-types``; here the shape common to all: the type's name, base64 files, no other field."""
    if task_type is None:
        types = [jt for jt in load_all().all() if not jt.submit_path]
        json_schema: dict[str, Any] = {
            "type": "object", "required": ["task_type"], "additionalProperties": False,
            "properties": {
                "task_type": {"type": "string", "enum": [jt.name for jt in types],
                              "description": "A name from GET /api/v1/task-types."},
                "prompt": {"type": "string"},
                **{name: {"type": "string", "contentEncoding": "base64"} for name in FILE_FIELDS},
                "parameters": {"type": "object", "description": "Per type; see its input_schema."},
                **WEBHOOK_PROPERTIES,
            },
            **WEBHOOK_DEPENDENCY,
        }
        examples = {ex["task_type"]: {"value": runnable_example(ex)} for jt in types for ex in jt.examples[:1]}
        form: dict[str, Any] = {
            "type": "object", "required": ["task_type"], "additionalProperties": False,
            "properties": {"task_type": json_schema["properties"]["task_type"],
                           "parameters": {"type": "object", "description": "A JSON object, as a part of its own."},
                           "prompt": {"type": "string"},
                           **{name: {"type": "string", "format": "binary"} for name in FILE_FIELDS},
                           "webhook": WEBHOOK_PROPERTIES["webhook"]}}
    else:
        jt = load_all().get(task_type)
        json_schema, form = _type_bodies(jt.input_schema() if jt else {}, task_type)
        examples = {"example": {"value": {k: runnable_example(v, k) for k, v in ex.items() if k != "task_type"}}
                    for ex in (jt.examples[:1] if jt else ())}
    return {
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": json_schema, "examples": examples},
            "multipart/form-data": {"schema": form, "encoding": JSON_PARTS}}},
        "parameters": [*HEADERS, ASYNC_PROCESSING, INLINE],
    }
