"""The `aitasks` command: run the whole service or one part of it, manage API keys, and use the service
(submit, watch, results: aitasks.cli.jobs)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Annotated

import typer

from aitasks.cli.db import register as register_db_commands
from aitasks.cli.jobs import register as register_job_commands
from aitasks.errors import ConfigurationError, ServiceUnavailable

app = typer.Typer(help="aitasks: run AI jobs in the background.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
tenants_app = typer.Typer(help="Per-tenant settings kept in the store of record.", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def run(
    tenant: Annotated[str, typer.Option(help="Tenant of the API key printed at start.")] = "default",
    flower: Annotated[bool, typer.Option(
        "--flower", help="Also start Flower (Celery's monitor) on the same Redis; beyond loopback (AITASKS_HOST) "
                         "it needs AITASKS_FLOWER_BASIC_AUTH=user:password, or nothing starts.")] = False,
    flower_port: Annotated[int, typer.Option(help="Flower's port.")] = 5555,
) -> None:
    """Start everything: a private Redis (unless AITASKS_REDIS_URL is set), cpu and gpu workers, the API."""
    from aitasks.service.supervisor import Supervisor
    from aitasks.settings import get_settings

    raise typer.Exit(Supervisor(get_settings(), tenant=tenant, flower_port=flower_port if flower else None).run())


app.command("up", help="The same as `run`.")(run)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Default: AITASKS_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Default: AITASKS_PORT.")] = None,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API (uvicorn)."""
    import uvicorn

    from aitasks.api.lean_http import LeanHttpToolsProtocol
    from aitasks.logs import setup_logging
    from aitasks.settings import get_settings

    settings = get_settings()
    setup_logging(settings.log_level, "api")
    try:
        settings.resolved_redis_url()
        settings.check_production()
        _schema_at_start(settings.resolved_database_url, retry_in_background=True)
    except ConfigurationError as exc:
        fail(str(exc))
    # httptools, with smaller per-connection objects (api/lean_http.py: 10,000 open streams a process).
    uvicorn.run("aitasks.api.app:create_app", factory=True, host=host or settings.host,
                port=port or settings.port, workers=workers, loop="uvloop", http=LeanHttpToolsProtocol,
                access_log=False, log_config=None, log_level=settings.log_level.lower(), timeout_graceful_shutdown=5)


@app.command()
def worker(
    queues: Annotated[str, typer.Option(help="Comma-separated queues to serve: cpu, gpu.")] = "cpu",
    concurrency: Annotated[int | None, typer.Option(help="Pool processes; default AITASKS_WORKER_CONCURRENCY.")] = None,
    name: Annotated[str | None, typer.Option(help="Celery node name; default <queues>.<pid>@<host>.")] = None,
    pool: Annotated[str | None, typer.Option(
        help="prefork (one job per pool process) or threads (jobs share batchable model steps); "
             "default AITASKS_WORKER_POOL.")] = None,
) -> None:
    """Run a Celery worker for the given queues."""
    import logging

    from celery.utils.nodenames import host_format

    from aitasks.jobs.keys import QUEUES
    from aitasks.logs import setup_logging
    from aitasks.settings import get_settings
    from aitasks.worker.preload import SERVED_QUEUES_ENV

    settings = get_settings()
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    bad = [q for q in wanted if q not in QUEUES]
    if not wanted or bad:
        fail(f"--queues must name one or more of {', '.join(QUEUES)}")
    try:
        settings.resolved_redis_url()
    except ConfigurationError as exc:
        fail(str(exc))
    setup_logging(settings.log_level, f"worker-{'+'.join(wanted)}")
    try:  # the recorder (a thread of this process) waits for a database that is down
        _schema_at_start(settings.resolved_database_url, retry_in_background=False)
    except ConfigurationError as exc:
        fail(str(exc))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ[SERVED_QUEUES_ENV] = ",".join(wanted)  # read by the pool processes' preload
    from aitasks.worker.malloc import tune_malloc

    tune_malloc()  # before the pool forks: every pool process inherits it
    from aitasks.store import worker_hook  # noqa: F401  (the recorder thread)
    from aitasks.worker import monitor, preload, relay, runner, webhooks  # noqa: F401  (the task and hooks)
    from aitasks.worker.quiet import quiet_celery

    quiet_celery()
    node = name or f"{'+'.join(wanted)}.{os.getpid()}@%h"
    pool_size = concurrency or settings.worker_concurrency
    pool_kind = pool or settings.worker_pool
    if pool_kind not in ("prefork", "threads"):
        fail("--pool must be prefork or threads")
    if pool_kind == "threads":  # no pool process starts: what worker_process_init does runs here, once
        from aitasks import error_reports, tracing
        from aitasks.worker.batching import set_jobs_in_process

        set_jobs_in_process(pool_size)  # the batchable steps size their threads (and torch's) by it

        tracing.setup("worker")  # (runner.py does these two per pool process under prefork)
        error_reports.setup("worker", settings.environment)
        preload.preload_models()
    # --quiet: no banner on stdout; this line says what it said that matters.
    logging.getLogger("aitasks.worker").info("worker %s: queues %s, concurrency %d (%s)",
                                             host_format(node), ",".join(wanted), pool_size, pool_kind)
    argv = ["--quiet", "worker", "-Q", ",".join(wanted), "-c", str(pool_size), "-n", node, "-P", pool_kind,
            "--without-gossip", "--without-mingle", "--loglevel", settings.log_level]
    runner.app.worker_main(argv)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="The tenant the key acts for.")],
    name: Annotated[str, typer.Option(help="A label to recognise the key by.")] = "",
    expires_in: Annotated[str | None, typer.Option(
        help="Lifetime, e.g. 30d, 12h, 90m, 2w; after it the key is refused (401). Default: never.")] = None,
    scope: Annotated[str, typer.Option(
        help="read: GETs only (status, results, lists, streams); write: all a tenant does; "
             "admin: write and operator-only things (the diagnostic type).")] = "write",
) -> None:
    """Create a key; prints only the key, so scripts can capture it (it cannot be shown again)."""
    from aitasks.jobs.apikeys import create_key, parse_duration

    try:
        expires_s = parse_duration(expires_in) if expires_in is not None else None
        key = create_key(_redis(), tenant, name, scope=scope, expires_in_s=expires_s, db=_db())
    except (ValueError, ServiceUnavailable) as exc:
        fail(str(exc))
    typer.echo(key)


@keys_app.command("list")
def keys_list() -> None:
    """List keys (their ids, never the keys)."""
    from aitasks.jobs.apikeys import list_keys

    try:
        rows = list_keys(_redis(), db=_db())
    except ServiceUnavailable as exc:
        fail(str(exc))
    if not rows:
        typer.echo("no keys")
        return
    typer.echo(f"{'ID':<14}{'TENANT':<20}{'SCOPE':<7}{'CREATED (UTC)':<21}{'LAST USED (UTC)':<21}"
               f"{'EXPIRES (UTC)':<31}NAME")
    now = time.time()

    def when(at: float) -> str:
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")

    for k in rows:
        expires = "never" if k.expires_at is None else (
            when(k.expires_at) + (" (expired)" if k.expires_at <= now else ""))
        used = "never" if k.last_used_at is None else when(k.last_used_at)
        typer.echo(f"{k.id:<14}{k.tenant:<20}{k.scope:<7}{when(k.created_at):<21}{used:<21}{expires:<31}{k.name}")


@keys_app.command("secret")
def keys_secret(
    tenant: Annotated[str, typer.Option(help="The tenant whose webhook signing secret to show.")],
    rotate: Annotated[bool, typer.Option(help="Replace it with a new one (receivers must be told).")] = False,
) -> None:
    """The tenant's webhook signing secret (whsec_...), made on first use; prints only the secret.
    Derived from the deployment's secret key (AITASKS_SECRET_KEY or <data dir>/secret.key), which Redis
    never holds: run it where the workers run, with their settings."""
    from aitasks.jobs.webhooks import rotate_secret, tenant_secret

    try:
        typer.echo(rotate_secret(_redis(), tenant) if rotate else tenant_secret(_redis(), tenant))
    except ConfigurationError as exc:
        fail(str(exc))


@keys_app.command("revoke")
def keys_revoke(key: Annotated[str, typer.Argument(help="The key, or its id from `aitasks keys list`.")]) -> None:
    """Revoke a key at once (the API stops accepting it immediately)."""
    from aitasks.jobs.apikeys import revoke_key

    try:
        if revoke_key(_redis(), key, db=_db()) == 0:
            fail("no such key", 1)
    except ServiceUnavailable as exc:
        fail(str(exc))
    typer.echo("revoked")


@tenants_app.command("retention")
def tenants_retention(
    tenant: Annotated[str, typer.Option(help="The tenant.")],
    days: Annotated[int | None, typer.Option(
        min=0, help="Days its ended jobs stay in the history (0: for ever).")] = None,
    default: Annotated[bool, typer.Option(
        "--default", help="Use the deployment's AITASKS_HISTORY_RETENTION_DAYS again.")] = False,
) -> None:
    """Set how long the store of record keeps a tenant's ended jobs (the retention sweep removes older)."""
    from aitasks.store.retention import set_tenant_retention

    if (days is None) == (not default):
        fail("give --days N or --default")
    _tenant_name(tenant)
    engine = _db()
    try:
        set_tenant_retention(engine, tenant, None if default else days)
    finally:
        engine.dispose()
    typer.echo(f"tenant {tenant}: history kept " + ("as the deployment's default (AITASKS_HISTORY_RETENTION_DAYS)"
                                                    if default else "for ever" if days == 0 else f"{days} days"))


def _tenant_name(tenant: str) -> None:
    from aitasks.jobs.apikeys import TENANT_RE

    if not TENANT_RE.match(tenant):
        fail("tenant must be 1-64 characters: letters, digits, '_', '.', '-'")


@tenants_app.command("set")
def tenants_set(
    tenant: Annotated[str, typer.Argument(help="The tenant.")],
    max_running: Annotated[int | None, typer.Option(help="Its jobs handed to the workers and not ended, at once, on every worker.")] = None,
    max_queued: Annotated[int | None, typer.Option(help="Its queued jobs (PENDING) before submits answer 429.")] = None,
    submits_per_s: Annotated[float | None, typer.Option(help="Its sustained submit rate (token bucket) before 429.")] = None,
    burst: Annotated[int | None, typer.Option(help="Submits at once above the rate (the bucket's size); 0: one "
                                                   "second's worth of the rate.")] = None,
    max_streams: Annotated[int | None, typer.Option(help="Its open SSE streams, WebSockets and waiting submits "
                                                         "before 429.")] = None,
    max_storage_mb: Annotated[int | None, typer.Option(help="Its stored files in MB (job files, uploads, documents) "
                                                            "before 413/507.")] = None,
    weight: Annotated[float | None, typer.Option(help="Its share of the worker slots against other waiting tenants (2: twice).")] = None,
    default: Annotated[list[str] | None, typer.Option(
        "--default", help="A limit to set back to the deployment's default (repeatable), e.g. --default burst.")] = None,
) -> None:
    """Set a tenant's limits (0: no limit), in the store of record first, then in Redis, where the API
    enforces them from its next submit on. Limits not named keep their value."""
    from aitasks.jobs import limits
    from aitasks.store.tenant_limits import LIMITS

    _tenant_name(tenant)
    values: dict[str, int | float | None] = {
        name: value for name, value in (("max_running", max_running), ("max_queued", max_queued),
                                        ("submits_per_s", submits_per_s), ("burst", burst),
                                        ("max_streams", max_streams), ("max_storage_mb", max_storage_mb),
                                        ("weight", weight)) if value is not None}
    for name in default or []:
        name = name.replace("-", "_")
        if name not in LIMITS:
            fail(f"--default {name}: not a tenant limit (one of: {', '.join(LIMITS)})")
        if name in values:
            fail(f"--{name.replace('_', '-')} and --default {name} together: give one")
        values[name] = None
    if not values:
        fail("give at least one limit, e.g. --max-queued 1000 (see --help)")
    engine = _db()
    try:
        row = limits.save(_redis(), engine, tenant, values)
    except ValueError as exc:
        fail(str(exc))
    finally:
        engine.dispose()
    _show_limits(tenant, row)


@tenants_app.command("show")
def tenants_show(tenant: Annotated[str, typer.Argument(help="The tenant.")]) -> None:
    """A tenant's limits (its own, or the deployment's default) and its current usage."""
    from aitasks.store.tenant_limits import get_limits

    _tenant_name(tenant)
    engine = _db()
    try:
        row = get_limits(engine, tenant)
    finally:
        engine.dispose()
    _show_limits(tenant, row)


def _show_limits(tenant: str, own: dict[str, int | float | None] | None) -> None:
    from aitasks.jobs import limits
    from aitasks.settings import get_settings
    from aitasks.store.tenant_limits import ENFORCED, LIMITS

    settings = get_settings()
    in_force = limits.effective(settings, own)
    typer.echo(f"tenant {tenant}" + ("" if own is not None else " (not in the store of record: the defaults)"))
    for name in LIMITS:
        value = in_force[name]
        shown = "-" if value is None else "auto" if name == "burst" and value == 0 else (
            "no limit" if value == 0 and name != "weight" else f"{value:g}")  # burst 0: a second of the rate
        source = "set for the tenant" if (own or {}).get(name) is not None else "default"
        note = "" if name in ENFORCED else "  (not enforced yet)"
        typer.echo(f"  {name:<16}{shown:<12}{source}{note}")
    from aitasks.jobs import keys

    r = _redis()
    usage = limits.peek(r, settings, tenant)
    running = r.zcard(keys.tenant_running(tenant))
    tokens = f"{usage.tokens:.1f} of {usage.burst}" if usage.submits_per_s > 0 else "no rate limit"
    typer.echo(f"usage: queued {usage.queued}, running {running}, submit tokens {tokens}, streams open "
               f"{usage.streams}, storage {usage.stored_bytes / 1048576:.2f} MB")


def _schema_at_start(url: str, retry_in_background: bool) -> None:
    """The store of record's migrations (aitasks.store.startup); ConfigurationError when it is newer."""
    from aitasks.store.startup import at_start

    at_start(url, retry_in_background)


def _redis():  # type: ignore[no-untyped-def]
    import redis

    from aitasks.settings import get_settings

    try:
        url = get_settings().resolved_redis_url()
    except ConfigurationError as exc:
        fail(str(exc))
    client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        fail(f"cannot reach Redis at {url}: {exc}")
    return client


def _db():  # type: ignore[no-untyped-def]
    """The store of record, at this code's schema (keys are written there first); exits saying why not."""
    import sqlalchemy as sa

    from aitasks.settings import get_settings
    from aitasks.store import engine as engines
    from aitasks.store import migrate

    url = get_settings().resolved_database_url
    try:
        migrate.upgrade(url)
    except ConfigurationError as exc:
        fail(str(exc))
    except sa.exc.SQLAlchemyError as exc:
        fail(f"cannot reach the store of record at {engines.shown(url)} (AITASKS_DATABASE_URL): "
             f"{str(exc).splitlines()[0]}")
    return engines.create(url)


register_job_commands(app)  # after the service commands, so --help lists those first
register_db_commands(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
