"""Per-tenant submit limits at the API (issue 18; jobs/limits.py keeps them on Redis): every submit path takes
its tokens here before a job is built, and a refusal answers ``429`` naming the limit.

Over ``submits_per_s``: ``Retry-After`` (whole seconds until the tokens are there) and the IETF draft's
``RateLimit-Limit`` (the burst), ``RateLimit-Remaining`` (whole tokens left) and ``RateLimit-Reset`` (seconds
until the bucket is full), with ``RateLimit-Policy`` (``<burst>;w=<seconds to fill it>``). Over ``max_queued``:
``Retry-After: 1`` (a slot frees when one of the tenant's queued jobs starts or ends).

While Redis is unreachable and the API's outbox takes submits (api/outbox_forwarder.py), nothing can be
counted: those submits pass unlimited, as their jobs are forwarded later without the check.
"""

from __future__ import annotations

import math

from aitasks.api.outbox_forwarder import unreachable
from aitasks.api.services import Services
from aitasks.errors import FieldError, TooManyRequests
from aitasks.jobs import limits
from aitasks.jobs.limits import Decision


async def decide(services: Services, tenant: str, n: int) -> Decision:
    """TAKE for ``n`` submits (0: only read), through the submits' shared pipeline when there is one."""
    script_keys, args = limits.take_call(services.settings, tenant, n)
    pipe = services.store.pipe
    if pipe is not None:
        raw = await pipe.evalsha(services.limits_sha, limits.TAKE, script_keys, args)
    else:
        raw = await services.redis.eval(limits.TAKE, len(script_keys), *script_keys, *args)  # type: ignore[arg-type]
    return Decision.parse(raw)


async def take(services: Services, tenant: str, n: int = 1) -> None:
    """Take ``n`` submits of ``tenant``'s limits, or raise TooManyRequests naming the one it passes."""
    outbox = services.outbox
    if outbox is not None and outbox.down:
        return  # the outbox accepts it; no counting without Redis
    try:
        decision = await decide(services, tenant, n)
    except Exception as exc:
        if outbox is None or not unreachable(exc):
            raise
        outbox.mark_down(exc)
        return
    if not decision.allowed:
        raise refusal(decision, n)


def rate_headers(d: Decision) -> dict[str, str]:
    """The IETF draft's RateLimit-* headers of a tenant's token bucket."""
    window = math.ceil(d.burst / d.submits_per_s) if d.submits_per_s > 0 else 0
    return {"RateLimit-Limit": str(d.burst), "RateLimit-Remaining": str(max(0, math.floor(d.tokens))),
            "RateLimit-Reset": str(math.ceil(d.full_in_s)), "RateLimit-Policy": f"{d.burst};w={window}"}


def refusal(d: Decision, n: int) -> TooManyRequests:
    if d.refused == "max_queued":
        return queue_full(d.max_queued, d.queued)
    headers = rate_headers(d)
    if d.retry_after_s < 0:  # more at once than the bucket holds: waiting does not help
        message = (f"{n} submits at once is more than this tenant's burst of {d.burst}: send at most {d.burst} "
                   f"at a time (submits_per_s {d.submits_per_s:g})")
        return TooManyRequests(message, [FieldError("submits_per_s", f"burst {d.burst} is less than {n}")],
                               headers=headers, extra={"limit": "submits_per_s", "retry_after_s": None})
    retry = max(1, math.ceil(d.retry_after_s))
    message = (f"Over this tenant's submit rate of {d.submits_per_s:g}/s (burst {d.burst}): "
               f"try again in {retry} s")
    return TooManyRequests(message, [FieldError("submits_per_s", f"over {d.submits_per_s:g} submits per second")],
                           headers={"Retry-After": str(retry), **headers},
                           extra={"limit": "submits_per_s", "retry_after_s": round(d.retry_after_s, 3)})


def queue_full(max_queued: int, queued: int | None = None) -> TooManyRequests:
    held = f" ({queued} queued)" if queued is not None else ""
    message = (f"This tenant already has its max_queued of {max_queued} jobs waiting to start{held}: "
               "submit again once some have started")
    return TooManyRequests(message, [FieldError("max_queued", f"at its limit of {max_queued} queued jobs")],
                           headers={"Retry-After": "1"}, extra={"limit": "max_queued", "retry_after_s": 1.0})
