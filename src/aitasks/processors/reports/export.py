"""``export``: a PDF report of some of the tenant's finished jobs.

A summary table first (one row per job), then one page per job: its type, status, queue, attempts,
timings (queued, started, finished; time waiting and running), error if it failed, its parameters,
thumbnails of its input images and its output images (transparent parts on a checkerboard). The text
is real text in an embedded TrueType font (DejaVu Sans, from the matplotlib wheel), so the PDF is
searchable and copyable; every page says "Page N of M".

Only the caller's own jobs can be exported, and only finished ones: the API refuses other ids at submit
(400 naming ``parameters.task_ids``), without telling an unknown id from another tenant's. A job that
expires between submit and run fails the export with an error naming it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aitasks.errors import FieldError, JobError, ValidationFailed
from aitasks.jobs import keys
from aitasks.jobs.models import Job
from aitasks.processors.registry import job_type
from aitasks.processors.reports.export_pdf import build_pdf
from aitasks.worker.context import JobContext

if TYPE_CHECKING:
    from aitasks.jobs.store import AsyncJobStore

REPORT_NAME = "report.pdf"
MAX_JOBS = 100
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
TERMINAL = ("SUCCESS", "FAILURE", "REVOKED")


class ExportParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_ids: list[str] = Field(min_length=1, max_length=MAX_JOBS,
                                description="Ids of your finished jobs to report on, in this order (1-100; "
                                            "repeats are listed once).")
    title: str = Field("Job report", min_length=1, max_length=120, description="The report's title.")
    include_images: bool = Field(True, description="Embed input thumbnails and output images.")

    @field_validator("task_ids")
    @classmethod
    def _ids(cls, value: list[str]) -> list[str]:
        for job_id in value:
            if not job_id or len(job_id) > 64 or not set(job_id) <= _ID_CHARS:
                raise ValueError(f"{job_id[:70]!r} is not a job id")
        return list(dict.fromkeys(value))


class ExportInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parameters: ExportParameters


def _refusal(missing: list[str], unfinished: list[str]) -> ValidationFailed | None:
    parts = []
    if missing:
        parts.append(f"not found among your jobs (unknown, expired or not yours): {', '.join(missing)}")
    if unfinished:
        parts.append(f"not finished yet: {', '.join(unfinished)}")
    if not parts:
        return None
    message = "; ".join(parts)
    return ValidationFailed(f"parameters.task_ids: {message}", [FieldError("parameters.task_ids", message)])


async def check_access(data: ExportInput, tenant: str, store: AsyncJobStore) -> None:
    """At submit: every id is one of the caller's jobs, still kept, and finished."""
    ids = data.parameters.task_ids
    pipe = store.r.pipeline(transaction=False)
    for job_id in ids:
        pipe.hmget(keys.job(job_id), "tenant", "status")
    missing, unfinished = [], []
    for job_id, (owner, status) in zip(ids, await pipe.execute()):
        owner = owner.decode() if isinstance(owner, bytes) else owner
        status = status.decode() if isinstance(status, bytes) else status
        if owner != tenant:
            missing.append(job_id)
        elif status not in TERMINAL:
            unfinished.append(job_id)
    refusal = _refusal(missing, unfinished)
    if refusal is not None:
        raise refusal


# --- the job type ------------------------------------------------------------------------------------


@job_type(
    "export", input=ExportInput, queue="cpu", soft_time_limit_s=240, time_limit_s=300, max_retries=1,
    description="A PDF report of your finished jobs: a summary table, then per job its timings, "
                "parameters, input thumbnails and output images. Searchable text, page numbers.",
    check_access=check_access,
    examples=({"task_type": "export", "parameters": {"task_ids": ["<a finished job's id>", "<another>"],
                                                     "title": "Job report"}},),
)
def export(data: ExportInput, ctx: JobContext) -> dict[str, Any]:
    params = data.parameters
    started = time.monotonic()
    jobs: list[Job] = []
    missing, unfinished = [], []
    for job_id in params.task_ids:
        job = ctx.tenant_job(job_id)
        if job is None:
            missing.append(job_id)
        elif not job.status.is_terminal():
            unfinished.append(job_id)
        else:
            jobs.append(job)
    refusal = _refusal(missing, unfinished)
    if refusal is not None:
        raise JobError(f"cannot export: {refusal.fields[0].message}")
    ctx.progress(5, f"{len(jobs)} jobs loaded")

    files: dict[tuple[str, str], bytes | None] = {}
    by_id = {job.id: job for job in jobs}

    def read(job_id: str, name: str) -> bytes | None:
        if (job_id, name) not in files:
            try:
                files[(job_id, name)] = ctx.read_job_file(by_id[job_id], name)
            except (FileNotFoundError, ValueError):
                files[(job_id, name)] = None
        return files[(job_id, name)]

    def laid_out(i: int) -> None:
        ctx.progress(5 + 90 * i / len(jobs), f"job {i}/{len(jobs)} rendered")
        ctx.check_cancel()

    pdf, pages = build_pdf(jobs, params.title, ctx.job.tenant, read, params.include_images, laid_out)
    ctx.check_cancel()
    ctx.save_artifact(REPORT_NAME, pdf, "application/pdf")
    ctx.progress(98, "report saved")
    return {
        "report_artifact": REPORT_NAME,
        "pages": pages,
        "bytes": len(pdf),
        "jobs": [{"task_id": j.id, "task_type": j.type, "status": j.status.value} for j in jobs],
        "metadata": {"title": params.title, "include_images": params.include_images,
                     "elapsed_ms": round((time.monotonic() - started) * 1000, 1)},
    }
