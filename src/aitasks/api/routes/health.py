"""Liveness, readiness and Prometheus metrics.

Probes are cheap: the live workers are read from the ``aitasks:workers`` sorted set and their heartbeat
keys by name (two round trips, no keyspace-wide SCAN). ``/readyz`` answers a generic reason per
dependency (the details go to the log), and ``/metrics`` asks for ``AITASKS_METRICS_TOKEN`` when it is set.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from aitasks.api import schemas
from aitasks.api.broker_depth import queue_depths
from aitasks.jobs.dispatch import tenant_loads
from aitasks.api.deps import ServicesDep, bearer
from aitasks.api.routing import ApiRoute
from aitasks.api.services import Services
from aitasks.errors import Unauthorized
from aitasks.jobs import keys
from aitasks.jobs.metrics import cumulative_histogram
from aitasks.store import engine as engines

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"], route_class=ApiRoute)


async def live_workers(services: Services) -> list[dict[str, Any]]:
    """The workers whose heartbeat key exists (a name whose key expired is a dead worker: skipped)."""
    names = await services.redis.zrange(keys.WORKERS, 0, -1)
    if not names:
        return []
    values = await services.redis.mget([keys.worker(n.decode() if isinstance(n, bytes) else str(n)) for n in names])
    return [orjson.loads(v) for v in values if v]


@router.get("/healthz", summary="The API process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Redis reachable and a worker alive for each queue",
            responses={503: {"description": "Not ready: the body says what is missing."}})
async def readyz(services: ServicesDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        await services.redis.ping()
        checks["redis"] = "ok"
        workers = await live_workers(services)
    except Exception as exc:  # the reason stays in the log: error text may carry hosts or internals
        log.warning("readyz: Redis check failed: %s: %s", type(exc).__name__, exc)
        checks["redis"] = "unreachable"
        workers = []
    per_queue = {q: sum(1 for w in workers if q in w.get("queues", [])) for q in keys.QUEUES}
    checks["workers"] = per_queue
    checks["database"] = await database_state(services)
    if services.settings.amqp_broker:  # RabbitMQ carries the queues: no job runs without it
        checks["broker"] = await broker_state(services)
    missing = [q for q, n in per_queue.items() if n == 0]
    ready = checks["redis"] == "ok" and checks.get("broker", "ok") == "ok" and not missing
    body = {"status": "ready" if ready else "not ready", **checks}
    if missing:
        body["missing"] = f"no live worker for queue(s): {', '.join(missing)}"
    if checks.get("broker", "ok") != "ok":
        body["broker_down"] = "RabbitMQ (AITASKS_BROKER_URL) cannot be reached: jobs are accepted, not run"
    if checks["database"] != "ok":  # jobs run without SQL: history waits (docs/history.md), readiness holds
        body["degraded"] = "the store of record cannot be reached: job history is delayed, jobs are not"
    return JSONResponse(body, 200 if ready else 503)


_CHECK_EVERY_S = 5.0  # a probe every second costs the database (the broker) one query (connection) every 5 s
_seen: dict[str, tuple[float, str]] = {}


async def cached_state(what: str, shown: str, probe: Callable[[], None]) -> str:
    """``ok`` or ``unreachable`` (the reason to the log), checked at most every 5 s, waited for at most 2 s."""
    seen = _seen.get(shown)
    if seen and seen[0] > time.monotonic():
        return seen[1]
    try:
        await asyncio.wait_for(asyncio.to_thread(probe), 2.0)
        state = "ok"
    except Exception as exc:
        log.warning("readyz: %s at %s: %s: %s", what, shown, type(exc).__name__,
                    str(exc).splitlines()[0] if str(exc) else "")
        state = "unreachable"
    _seen[shown] = (time.monotonic() + _CHECK_EVERY_S, state)
    return state


async def database_state(services: Services) -> str:
    url = services.settings.resolved_database_url

    def query() -> None:
        with engines.shared(url).connect() as connection:
            connection.execute(sa.select(1))

    return await cached_state("the store of record", engines.shown(url), query)


async def broker_state(services: Services) -> str:
    """RabbitMQ (AITASKS_BROKER_URL) answers an AMQP connection; its password is never shown."""
    from kombu import Connection

    url = services.settings.resolved_broker_url()

    def connect() -> None:
        with Connection(url, connect_timeout=2) as connection:
            connection.connect()

    return await cached_state("the broker", Connection(url).as_uri(), connect)


TENANT_LABELS = 10  # tenants named in the per-tenant gauges; the others are summed as "other"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def check_metrics_token(request: Request, services: Services) -> None:
    """With AITASKS_METRICS_TOKEN set, the scrape must send it as a Bearer token (compared in constant time)."""
    token = services.settings.metrics_token
    if not token:
        return
    sent = bearer(request.headers.get("authorization")) or ""
    if not hmac.compare_digest(sent.encode(), token.encode()):
        raise Unauthorized("/metrics needs Authorization: Bearer <AITASKS_METRICS_TOKEN>.")


@router.get("/metrics", response_class=PlainTextResponse, summary="Prometheus metrics",
            responses={401: {"model": schemas.ErrorBody, "description": "AITASKS_METRICS_TOKEN is set and the "
                                                                       "request did not send it as its Bearer token."}},
            openapi_extra={"security": [{}, {"metricsToken": []}]})
async def metrics(request: Request, services: ServicesDep) -> PlainTextResponse:
    """Jobs by type and status, durations, queue depths and workers, summed over the deployment.
    When `AITASKS_METRICS_TOKEN` is set, send it as `Authorization: Bearer <token>` (else `401`)."""
    check_metrics_token(request, services)
    r = services.redis
    types = services.registry.names()
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(keys.METRICS_JOBS)
    pipe.hgetall(keys.METRICS_SUBMITTED)
    for t in types:
        pipe.hgetall(keys.metrics_duration(t))
        pipe.hgetall(keys.metrics_duration_cumulative(t))
    for q in keys.QUEUES:
        pipe.llen(q)
    for q in keys.QUEUES:
        pipe.hlen(keys.dispatch(q, "messages"))  # waiting in the tenants' lines (fair dispatch)
    pipe.llen(keys.BROKER_OUTBOX)
    results = await pipe.execute()
    jobs, submitted = results[0], results[1]
    durations = [{k.decode(): v.decode() for k, v in h.items()} for h in results[2:2 + 2 * len(types)]]
    n, after = len(keys.QUEUES), 2 + 2 * len(types)
    depths = await queue_depths(services.settings, results[after:after + n])
    depths = [d + int(w) for d, w in zip(depths, results[after + n:-1])]
    workers = await live_workers(services)
    top, other = await tenant_loads(r, TENANT_LABELS)

    lines: list[str] = []
    add = lines.append
    add("# HELP aitasks_jobs_submitted_total Jobs accepted, by type.")
    add("# TYPE aitasks_jobs_submitted_total counter")
    for t in types:
        add(f'aitasks_jobs_submitted_total{{task_type="{_label(t)}"}} {int(submitted.get(t.encode(), 0))}')
    add("# HELP aitasks_jobs_finished_total Jobs that ended, by type and final status.")
    add("# TYPE aitasks_jobs_finished_total counter")
    for field, count in sorted(jobs.items()):
        t, _, status = field.decode().partition("|")
        add(f'aitasks_jobs_finished_total{{task_type="{_label(t)}",status="{status}"}} {int(count)}')
    add("# HELP aitasks_job_duration_seconds Run time of finished jobs, from start to end.")
    add("# TYPE aitasks_job_duration_seconds histogram")
    for i, t in enumerate(types):
        buckets, total, seconds = cumulative_histogram(durations[2 * i], durations[2 * i + 1])
        for bound, jobs in buckets:
            add(f'aitasks_job_duration_seconds_bucket{{task_type="{_label(t)}",le="{bound}"}} {jobs}')
        add(f'aitasks_job_duration_seconds_bucket{{task_type="{_label(t)}",le="+Inf"}} {total}')
        add(f'aitasks_job_duration_seconds_sum{{task_type="{_label(t)}"}} {seconds:.6f}')
        add(f'aitasks_job_duration_seconds_count{{task_type="{_label(t)}"}} {total}')
    add("# HELP aitasks_queue_depth Jobs waiting in each queue.")
    add("# TYPE aitasks_queue_depth gauge")
    for q, depth in zip(keys.QUEUES, depths):
        add(f'aitasks_queue_depth{{queue="{q}"}} {int(depth)}')
    add(f"# HELP aitasks_tenant_jobs_waiting Jobs waiting in each tenant's lines (the {TENANT_LABELS} busiest "
        'tenants; the rest as tenant="other").')
    add("# TYPE aitasks_tenant_jobs_waiting gauge")
    for load in [*top, other]:
        add(f'aitasks_tenant_jobs_waiting{{tenant="{_label(load.tenant)}"}} {load.waiting}')
    add("# HELP aitasks_tenant_jobs_running Jobs of each tenant handed to a queue and not ended (max_running).")
    add("# TYPE aitasks_tenant_jobs_running gauge")
    for load in [*top, other]:
        add(f'aitasks_tenant_jobs_running{{tenant="{_label(load.tenant)}"}} {load.running}')
    if services.settings.amqp_broker:
        add("# HELP aitasks_broker_outbox Jobs accepted and not yet published to RabbitMQ (the Redis outbox).")
        add("# TYPE aitasks_broker_outbox gauge")
        add(f"aitasks_broker_outbox {int(results[-1])}")
    add("# HELP aitasks_workers Live workers serving each queue (by heartbeat).")
    add("# TYPE aitasks_workers gauge")
    for q in keys.QUEUES:
        add(f'aitasks_workers{{queue="{q}"}} {sum(1 for w in workers if q in w.get("queues", []))}')
    add("# HELP aitasks_jobs_running Jobs running on live workers.")
    add("# TYPE aitasks_jobs_running gauge")
    add(f"aitasks_jobs_running {sum(len(w.get('active', [])) for w in workers)}")
    add("# HELP aitasks_scrape_timestamp_seconds When these numbers were read.")
    add("# TYPE aitasks_scrape_timestamp_seconds gauge")
    add(f"aitasks_scrape_timestamp_seconds {time.time():.3f}")
    return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4; charset=utf-8")
