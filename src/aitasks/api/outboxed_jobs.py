"""Reading a job that may still wait in this API's outbox (api/outbox_forwarder.py): it answers PENDING.

The outbox is looked at first, and only while it holds submits (an in-memory count: no cost otherwise); a
job found there is shown to its own tenant only, a foreign tenant gets the same 404 as for an unknown id.
"""

from __future__ import annotations

from aitasks.api.deps import load_job
from aitasks.api.services import Services
from aitasks.errors import NotFound
from aitasks.jobs.models import Job


async def outboxed_job(services: Services, tenant: str, job_id: str) -> Job | None:
    """The tenant's job from the outbox (PENDING, not yet in Redis); None when it is not there."""
    outbox = services.outbox
    if outbox is None or not outbox.holding or len(job_id) > 100:
        return None
    job = await outbox.find(job_id)
    if job is not None and job.tenant != tenant:
        raise NotFound(f"No task with id {job_id!r} (unknown, expired, or not yours)")
    return job


async def load_job_or_outboxed(services: Services, tenant: str, job_id: str) -> tuple[Job, bool]:
    """``load_job``, or the job waiting in the outbox; the flag says which (True: outboxed)."""
    job = await outboxed_job(services, tenant, job_id)
    if job is not None:
        return job, True
    return await load_job(services, tenant, job_id), False
