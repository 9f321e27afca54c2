"""The job's status document, as every reader is shown it: the API's answers, the event streams' full
state and the webhook's body are built here, so they carry the same fields and the same links."""

from __future__ import annotations

from typing import Any

from aitasks.jobs.artifacts import artifact_url
from aitasks.jobs.models import Job, Status


def result_with_links(job: Job, base: str) -> dict[str, Any]:
    """The job's result with its artifacts and their absolute URLs (``base``: the API's URL)."""
    result = {k: v for k, v in (job.result or {}).items() if k != "image_data"}
    result["artifacts"] = [{**a.to_dict(), "url": artifact_url(base, job.id, a.name)} for a in job.artifacts]
    return result


def status_document(job: Job, base: str) -> dict[str, Any]:
    """The seeds' status shape (``Job.status_view``) plus, once the job succeeded, its result with links."""
    doc = job.status_view()
    if job.status is Status.SUCCESS:
        doc["result"] = result_with_links(job, base)
    return doc
