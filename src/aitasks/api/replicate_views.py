"""Replicate's view of aitasks (served under /v1/ by api/routes/replicate.py).

Every job type is a model ``aitasks/<type>``. Its one version is named by a hash of its input schema,
and that schema is the job type's own input model, flattened: Replicate's ``input`` object carries the
top-level fields (files, prompt) and the ``parameters`` side by side; :func:`seed_fields` folds it back
into the seeds' shape, so both views are validated by the same model with the same errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

import orjson

from aitasks.api.services import Services
from aitasks.errors import ApiError, FieldError, NotFound, ValidationFailed
from aitasks.jobs import keys
from aitasks.jobs.storage_quota import StorageFull
from aitasks.jobs.models import Job, Status, iso
from aitasks.jobs.predictions import OWNER, prediction, version_id, version_view
from aitasks.processors.registry import JobType

log = logging.getLogger(__name__)

# --- errors --------------------------------------------------------------------------------------


def problem(exc: ApiError) -> tuple[int, dict[str, Any]]:
    """Replicate's error body (RFC 7807, as its client reads it), with our fields kept beside."""
    status = 422 if exc.status == 400 else exc.status
    title = {401: "Unauthenticated", 403: "Forbidden", 404: "Not found", 413: "Payload too large",
             422: "Input validation failed", 429: "Too many requests", 503: "Service unavailable",
             507: "Insufficient storage"}.get(status, "Error")
    body: dict[str, Any] = {"title": title, "detail": exc.message, "status": status,
                            "error": exc.message, "code": exc.code}
    if status == 422:
        body["invalid_fields"] = [{"type": "invalid", "field": f.field, "description": f.message}
                                  for f in exc.fields]
    body.update({k: v for k, v in exc.extra.items() if k not in body})  # task_id of a maybe-accepted job
    return status, body


# --- models and versions -------------------------------------------------------------------------


def model_view(jt: JobType, base: str) -> dict[str, Any]:
    return {
        "url": f"{base}/v1/models/{OWNER}/{jt.name}", "owner": OWNER, "name": jt.name,
        "description": jt.description, "visibility": "public", "github_url": None, "paper_url": None,
        "license_url": None, "run_count": 0, "cover_image_url": None, "default_example": None,
        "latest_version": version_view(jt),
    }


def find_model(services: Services, owner: str, name: str) -> JobType:
    jt = services.registry.get(name) if owner == OWNER else None
    if jt is None:
        raise NotFound(f"Model {owner}/{name} not found; models here are "
                       + ", ".join(f"{OWNER}/{n}" for n in services.registry.names()))
    return jt


def find_version(services: Services, ref: str) -> JobType:
    """A version id, or ``owner/name[:version]`` as some clients send in ``version``."""
    if "/" in ref:
        owner, _, rest = ref.partition("/")
        name, _, vid = rest.partition(":")
        jt = find_model(services, owner, name)
        if vid and vid != version_id(jt):
            raise NotFound(f"Version {vid} of {owner}/{name} not found")
        return jt
    for jt in services.registry.all():
        if version_id(jt) == ref:
            return jt
    raise NotFound(f"Version {ref} not found")


# --- input: Replicate's flat object to the seeds' fields -----------------------------------------


def seed_fields(jt: JobType, flat: dict[str, Any]) -> dict[str, Any]:
    top = set(jt.input_model.model_fields) - {"parameters"}
    fields: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for key, value in flat.items():
        if key in top:
            fields[key] = value
        elif key == "parameters" and isinstance(value, dict):
            params.update(value)
        else:
            params[key] = value
    if params:
        fields["parameters"] = params
    return fields


def file_id_of(url: str) -> str | None:
    """The id of a /v1/files/<id> URL (or its /download), whatever host the client saw us at."""
    parts = [p for p in urlsplit(url).path.split("/") if p]
    if len(parts) >= 3 and parts[-3:-1] == ["v1", "files"]:
        return parts[-1]
    if len(parts) >= 4 and parts[-4:-2] == ["v1", "files"] and parts[-1] == "download":
        return parts[-2]
    return None


# --- files uploaded through POST /v1/files: bytes in the artifact store, metadata in Redis ---------
#
# Redis holds the record (name, type, size, checksums, expiry) under keys.replicate_file(id), expiring after
# the retention time; the bytes are in the artifact store (ArtifactStore.file_path), written before the
# record and removed by the workers' sweep once the record is gone (or at once by DELETE).

_RECORD_FIELDS = ["id", "tenant", "name", "content_type", "size", "sha256", "md5", "metadata", "created_at",
                  "expires_at"]


async def save_file(services: Services, tenant: str, name: str, content_type: str, data: bytes,
                    metadata: dict[str, Any], ttl_s: int) -> dict[str, Any]:
    file_id = secrets.token_hex(12)
    now = time.time()
    record = {
        "id": file_id, "tenant": tenant, "name": name, "content_type": content_type, "size": str(len(data)),
        "sha256": hashlib.sha256(data).hexdigest(), "md5": hashlib.md5(data, usedforsecurity=False).hexdigest(),
        "metadata": orjson.dumps(metadata).decode(), "created_at": repr(now), "expires_at": repr(now + ttl_s),
    }
    try:
        await asyncio.to_thread(services.artifacts.save_file, tenant, file_id, data)
    except StorageFull as exc:  # over max_storage_mb: nothing stored
        raise exc.api_error() from None
    pipe = services.redis.pipeline(transaction=True)
    mapping: dict[Any, Any] = dict(record)
    pipe.hset(keys.replicate_file(file_id), mapping=mapping)
    pipe.expire(keys.replicate_file(file_id), ttl_s)
    pipe.zadd(keys.replicate_files(tenant), {file_id: now})
    pipe.zremrangebyscore(keys.replicate_files(tenant), 0, now - ttl_s)
    pipe.expire(keys.replicate_files(tenant), ttl_s)
    try:
        await pipe.execute()
    except BaseException:
        services.artifacts.delete_file(tenant, file_id)  # no record: nobody could reach these bytes
        raise
    return record


def _not_found(file_id: str) -> NotFound:
    return NotFound(f"File {file_id} not found (unknown, expired, or not yours)")


async def load_file(services: Services, tenant: str, file_id: str) -> dict[str, Any]:
    if len(file_id) > 64:
        raise _not_found(file_id)
    values = await services.redis.hmget(keys.replicate_file(file_id), _RECORD_FIELDS)
    if values[0] is None:
        raise _not_found(file_id)
    record = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in zip(_RECORD_FIELDS, values)}
    if record["tenant"] != tenant:
        raise _not_found(file_id)
    return record


async def file_bytes(services: Services, tenant: str, record: dict[str, Any]) -> bytes:
    """The bytes of a loaded record (the tenant's own: load_file checked it)."""
    try:
        return await asyncio.to_thread(services.artifacts.read_file, tenant, record["id"])
    except (FileNotFoundError, ValueError):  # swept after the record expired, or deleted meanwhile
        raise _not_found(record["id"]) from None


async def delete_file(services: Services, tenant: str, file_id: str) -> None:
    await load_file(services, tenant, file_id)
    await services.redis.delete(keys.replicate_file(file_id))
    await services.redis.zrem(keys.replicate_files(tenant), file_id)
    await asyncio.to_thread(services.artifacts.delete_file, tenant, file_id)


async def list_files(services: Services, tenant: str, limit: int = 100) -> list[dict[str, Any]]:
    ids = await services.redis.zrevrange(keys.replicate_files(tenant), 0, limit - 1)
    out = []
    for raw in ids:
        try:
            out.append(await load_file(services, tenant, raw.decode() if isinstance(raw, bytes) else str(raw)))
        except NotFound:
            continue
    return out


def file_view(record: dict[str, Any], base: str) -> dict[str, Any]:
    file_id = record["id"]
    return {
        "id": file_id, "name": record["name"], "content_type": record["content_type"],
        "size": int(record["size"]), "etag": record["md5"],
        "checksums": {"sha256": record["sha256"], "md5": record["md5"]},
        "metadata": orjson.loads(record["metadata"] or "{}"),
        "created_at": iso(float(record["created_at"])), "expires_at": iso(float(record["expires_at"])),
        "urls": {"get": f"{base}/v1/files/{file_id}"},
    }


def bad_file_url(field: str) -> ValidationFailed:
    return ValidationFailed(
        f"{field} must be a data: URI or the URL of a file uploaded to /v1/files of this service",
        [FieldError(field, "must be a data: URI or the URL of a file uploaded to /v1/files")])


# --- logs: the progress messages of the predictions this API process started ----------------------
#
# The job record keeps only the current message. While a prediction runs, the API process that accepted it
# listens to its events (every API process already receives them all) and appends each new message to a
# list that expires with the job. A restart of that process stops the collection: later messages are lost,
# the current one is still shown.

_collectors: set[asyncio.Task[None]] = set()
MAX_LOG_LINES = 1000


async def start_log_collector(services: Services, job_id: str, max_s: float) -> asyncio.Task[None]:
    """Subscribed before the job is accepted, so no message is missed; cancel it if the accept fails."""
    ready = asyncio.Event()
    task = asyncio.create_task(_collect(services, job_id, max_s, ready), name=f"replicate-logs-{job_id}")
    _collectors.add(task)
    task.add_done_callback(_collectors.discard)
    await ready.wait()
    return task


async def _collect(services: Services, job_id: str, max_s: float, ready: asyncio.Event) -> None:
    terminal = {s.value for s in Status if s.is_terminal()}
    key = keys.prediction_logs(job_id)
    last = ""
    deadline = time.monotonic() + max_s
    try:
        async with services.hub.subscribe(job_id) as events:
            ready.set()
            while (left := deadline - time.monotonic()) > 0:
                try:
                    event = await asyncio.wait_for(events.get(), timeout=min(left, 30.0))
                except TimeoutError:
                    event = {"resync": True}
                if event.get("resync"):
                    job = await services.store.get(job_id)
                    if job is None or job.status.is_terminal():
                        return
                    continue
                message = event.get("message")
                if isinstance(message, str) and message and message != last:
                    last = message
                    pipe = services.redis.pipeline(transaction=False)
                    pipe.rpush(key, message)
                    pipe.ltrim(key, -MAX_LOG_LINES, -1)
                    pipe.expire(key, int(max_s) + 60)
                    await pipe.execute()
                if event.get("status") in terminal:
                    return
    except asyncio.CancelledError:
        raise
    except Exception:  # Redis away: the logs are a courtesy, the job goes on
        log.warning("replicate logs of %s: collection stopped", job_id, exc_info=True)
    finally:
        ready.set()


async def log_history(services: Services, job_ids: list[str]) -> dict[str, list[str]]:
    if not job_ids:
        return {}
    pipe = services.redis.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.lrange(keys.prediction_logs(job_id), 0, -1)
    rows = await pipe.execute()
    return {job_id: [v.decode() if isinstance(v, bytes) else str(v) for v in row]
            for job_id, row in zip(job_ids, rows)}


# --- the prediction object -----------------------------------------------------------------------


def prediction_view(services: Services, job: Job, base: str, history: list[str] | None = None) -> dict[str, Any]:
    return prediction(services.registry.get(job.type), job, base, history)
