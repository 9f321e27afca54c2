"""The job-type catalog, built from the declarations."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from aitasks.api.routing import ApiRoute
from aitasks.api import schemas
from aitasks.api.deps import ServicesDep
from aitasks.processors.registry import JobType
from aitasks.settings import Settings

router = APIRouter(tags=["catalog"], route_class=ApiRoute)


def describe(jt: JobType, settings: Settings) -> dict[str, Any]:
    limits = jt.limits(settings)
    return {
        "name": jt.name,
        "description": jt.description,
        "queue": jt.queue,
        "input_schema": jt.input_schema(),
        "file_inputs": sorted(jt.files),
        "limits": {"soft_time_limit_s": limits["soft_time_limit_s"], "time_limit_s": limits["time_limit_s"],
                   "retention_s": limits["retention_s"], "max_upload_bytes": settings.max_upload_bytes,
                   "max_image_pixels": settings.max_image_pixels},
        "retry": {"max_retries": limits["max_retries"], "backoff_s": jt.retry_backoff_s,
                  "backoff_max_s": jt.retry_backoff_max_s, "jitter": True, "retries_on": "transient errors only"},
        "examples": list(jt.examples),
        "available": (reason := jt.unavailable_reason(settings)) is None,
        "unavailable_reason": reason,
        **({"options": jt.catalog} if jt.catalog else {}),
        **({"submit_path": jt.submit_path} if jt.submit_path else {}),
    }


@router.get("/api/v1/task-types", response_model=list[schemas.TaskTypeInfo], summary="Job types")
async def task_types(services: ServicesDep) -> list[dict[str, Any]]:
    """Every job type with its input JSON Schema, queue and limits."""
    return [describe(jt, services.settings) for jt in services.registry.all()]
