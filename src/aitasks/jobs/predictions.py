"""A job in Replicate's shapes: its model version (named by the input schema) and its prediction object.

Shared by the /v1/ routes (api/replicate_views.py, api/routes/replicate.py) and the workers' webhook
sender, which POSTs a job submitted through /v1/predictions as the prediction Replicate would send.
"""

from __future__ import annotations

import hashlib
import inspect
import os
from typing import TYPE_CHECKING, Any

import orjson

from aitasks.jobs.artifacts import artifact_url
from aitasks.jobs.models import Job, Status, iso

if TYPE_CHECKING:
    from aitasks.processors.registry import JobType

OWNER = "aitasks"

STATUS = {
    Status.PENDING: "starting",
    Status.PROCESSING: "processing",
    Status.RETRY: "processing",
    Status.SUCCESS: "succeeded",
    Status.FAILURE: "failed",
    Status.REVOKED: "canceled",
}

# Replicate's webhook events, as ours: output and logs arrive with the progress reports.
WEBHOOK_EVENTS = {"start": "start", "output": "progress", "logs": "progress", "completed": "completed"}


# --- models and versions -------------------------------------------------------------------------


def is_image_type(jt: JobType) -> bool:
    """An image job's output is its picture (one URL); any other type's is its result object."""
    return jt.func.__module__.startswith("aitasks.processors.image")


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            merged = {**defs[ref.removeprefix("#/$defs/")], **{k: v for k, v in node.items() if k != "$ref"}}
            return _inline_refs(merged, defs)
        return {k: _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


FILE_HOW = "a data: URI, or the URL of a file uploaded to /v1/files"


def _file_schema(prop: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in prop.items() if k not in ("contentEncoding", "contentMediaType", "anyOf")}
    said = str(out.get("description") or "")
    if not said or said.startswith("An image (PNG"):  # ImageFile's own words, about the seeds' API
        said = f"An image (PNG, JPEG or WebP): {FILE_HOW}."
    else:
        said = f"{said.rstrip('.')}. An image: {FILE_HOW}."
    out.update(type="string", format="uri", description=said)
    return out


def input_schema(jt: JobType) -> dict[str, Any]:
    """The Input component: the type's top-level fields and its parameters, side by side."""
    raw = jt.input_schema()
    schema = _inline_refs({k: v for k, v in raw.items() if k != "$defs"}, raw.get("$defs", {}))
    props: dict[str, Any] = {}
    required: list[str] = []
    order = 0
    for name, prop in schema.get("properties", {}).items():
        if name == "parameters":
            params = prop
            for option in prop.get("anyOf", []):
                if option.get("type") == "object":
                    params = option
            for pname, pprop in params.get("properties", {}).items():
                props[pname] = {**pprop, "x-order": order}
                order += 1
            required += [p for p in params.get("required", []) if p not in required]
            continue
        if name in jt.files:
            prop = _file_schema(prop)
        props[name] = {**prop, "x-order": order}
        order += 1
        if name in schema.get("required", []):
            required.append(name)
    out: dict[str, Any] = {"type": "object", "title": "Input", "properties": props}
    if required:
        out["required"] = required
    return out


def output_schema(jt: JobType) -> dict[str, Any]:
    if is_image_type(jt):
        return {"type": "string", "format": "uri", "title": "Output"}
    return {"type": "object", "title": "Output"}


def openapi_schema(jt: JobType) -> dict[str, Any]:
    return {
        "openapi": "3.0.2",
        "info": {"title": f"{OWNER}/{jt.name}", "version": "0.1.0"},
        "paths": {},
        "components": {"schemas": {"Input": input_schema(jt), "Output": output_schema(jt)}},
    }


_VERSION_IDS: dict[str, str] = {}


def version_id(jt: JobType) -> str:
    """Named by its schema: a new version appears exactly when the declaration changes. Computed once
    per type and process (building the schema takes ~1 ms, and every prediction shown names it)."""
    cached = _VERSION_IDS.get(jt.name)
    if cached is None:
        cached = hashlib.sha256(orjson.dumps(openapi_schema(jt), option=orjson.OPT_SORT_KEYS)).hexdigest()
        _VERSION_IDS[jt.name] = cached
    return cached


def _declared_at(jt: JobType) -> str:
    try:
        return iso(os.path.getmtime(inspect.getfile(jt.func))) or ""
    except (OSError, TypeError):
        return iso(0) or ""


def version_view(jt: JobType) -> dict[str, Any]:
    return {"id": version_id(jt), "created_at": _declared_at(jt), "cog_version": "aitasks",
            "openapi_schema": openapi_schema(jt)}


# --- the prediction object -----------------------------------------------------------------------


def flat_input(jt: JobType | None, job: Job, base: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (job.input or {}).items():
        if key == "parameters" and isinstance(value, dict):
            out.update(value)
        elif isinstance(value, dict) and value.get("artifact"):
            out[key] = artifact_url(base, job.id, value["artifact"])
        else:
            out[key] = value
    return out


def output_of(jt: JobType | None, job: Job, base: str) -> Any:
    if job.status is not Status.SUCCESS:
        return None
    result: dict[str, Any] = dict(job.result or {})
    names = {a.name for a in job.artifacts}
    image = result.get("image_artifact")
    if jt is not None and is_image_type(jt) and isinstance(image, str) and image in names:
        return artifact_url(base, job.id, image)
    result["artifacts"] = [{**a.to_dict(), "url": artifact_url(base, job.id, a.name)} for a in job.artifacts]
    return result


def logs_of(job: Job, history: list[str]) -> str:
    lines = list(history)
    if job.message and (not lines or lines[-1] != job.message):
        lines.append(job.message)
    if job.status is Status.FAILURE and job.error_message and job.error_message not in lines:
        lines.append(job.error_message)
    return "\n".join(lines)


def prediction(jt: JobType | None, job: Job, base: str, history: list[str] | None = None) -> dict[str, Any]:
    """The job as Replicate's prediction object; ``history``: its progress messages so far (its logs)."""
    urls = {"get": f"{base}/v1/predictions/{job.id}", "cancel": f"{base}/v1/predictions/{job.id}/cancel"}
    metrics: dict[str, Any] = {}
    if job.duration_s is not None:
        metrics["predict_time"] = round(job.duration_s, 6)
    return {
        "id": job.id,
        "model": f"{OWNER}/{job.type}",
        "version": version_id(jt) if jt else "",
        "input": flat_input(jt, job, base),
        "output": output_of(jt, job, base),
        "logs": logs_of(job, history or []),
        "error": job.error_message if job.status is Status.FAILURE else None,
        "status": STATUS[job.status],
        "source": "api",
        "data_removed": False,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "completed_at": iso(job.finished_at) if job.status.is_terminal() else None,
        "urls": urls,
        "metrics": metrics,
    }
