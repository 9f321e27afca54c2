"""Per-tenant submit limits at the API (issue 18; jobs/limits.py keeps them on Redis): every submit path takes
its tokens here before a job is built, and a refusal answers ``429`` naming the limit.

Over ``submits_per_s``: ``Retry-After`` (whole seconds until the tokens are there) and the IETF draft's
``RateLimit-Limit`` (the burst), ``RateLimit-Remaining`` (whole tokens left) and ``RateLimit-Reset`` (seconds
until the bucket is full), with ``RateLimit-Policy`` (``<burst>;w=<seconds to fill it>``). Over ``max_queued``:
``Retry-After: 1`` (a slot frees when one of the tenant's queued jobs starts or ends). A tenant already storing
its ``max_storage_mb``: ``507`` (its job could store nothing). A tenant with a rate gets the RateLimit-* headers
on its accepted submits too (``RateHeaders``: TAKE's answer, no extra Redis call).

While Redis is unreachable and the API's outbox takes submits (api/outbox_forwarder.py), nothing can be
counted: those submits pass unlimited, as their jobs are forwarded later without the check.
"""

from __future__ import annotations

import math
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aitasks.api.outbox_forwarder import unreachable
from aitasks.api.services import Services
from aitasks.errors import ApiError, FieldError, InsufficientStorage, TooManyRequests
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
    if decision.submits_per_s > 0:
        holder = _answer_headers.get()
        if holder is not None:
            holder.update(rate_headers(decision))


# The headers an accepted submit answers with: a dict per request (RateHeaders), which ``take`` fills; a dict
# rather than a value so that it reaches the response whatever context copy ``take`` ran in.
_answer_headers: ContextVar[dict[str, str] | None] = ContextVar("aitasks_answer_headers", default=None)


class RateHeaders:
    """Adds the RateLimit-* headers ``take`` left to a POST's successful answer (only POSTs submit)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        holder: dict[str, str] = {}
        token = _answer_headers.set(holder)

        async def send_with(message: Message) -> None:
            if message["type"] == "http.response.start" and holder and message["status"] < 300:
                message["headers"] = [*message.get("headers", []),
                                      *((k.lower().encode(), v.encode()) for k, v in holder.items())]
            await send(message)

        try:
            await self.app(scope, receive, send_with)
        finally:
            _answer_headers.reset(token)


def rate_headers(d: Decision) -> dict[str, str]:
    """The IETF draft's RateLimit-* headers of a tenant's token bucket."""
    window = math.ceil(d.burst / d.submits_per_s) if d.submits_per_s > 0 else 0
    return {"RateLimit-Limit": str(d.burst), "RateLimit-Remaining": str(max(0, math.floor(d.tokens))),
            "RateLimit-Reset": str(math.ceil(d.full_in_s)), "RateLimit-Policy": f"{d.burst};w={window}"}


def refusal(d: Decision, n: int) -> ApiError:
    if d.refused == "max_queued":
        return queue_full(d.max_queued, d.queued)
    if d.refused == "max_storage_mb":
        message = (f"This tenant already stores its max_storage_mb of {d.max_storage_mb} MB "
                   f"({d.stored_bytes / 1048576:.2f} MB): delete files or documents, or wait for retention to "
                   "remove old jobs' files, then submit again")
        return InsufficientStorage(message, [FieldError("max_storage_mb", f"at its limit of {d.max_storage_mb} MB")],
                                   extra={"limit": "max_storage_mb", "max_storage_mb": d.max_storage_mb,
                                          "storage_used_bytes": d.stored_bytes})
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
