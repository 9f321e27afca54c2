"""The tables of the store of record (SQLAlchemy Core). Migrations (``migrations/versions``) create them;
this module is what the code reads and writes, and a test checks the two agree."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

tenants = sa.Table(
    "tenants", metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("history_retention_days", sa.Integer, nullable=True),  # None: the deployment's default
    # Flow control (0005; store/tenant_limits.py). None: the deployment's default (settings.py). Enforced so
    # far: max_queued, submits_per_s, burst; the others are kept for the work of issue 18 that follows.
    sa.Column("max_running", sa.Integer, nullable=True),
    sa.Column("max_queued", sa.Integer, nullable=True),
    sa.Column("submits_per_s", sa.Double, nullable=True),
    sa.Column("burst", sa.Integer, nullable=True),
    sa.Column("max_streams", sa.Integer, nullable=True),
    sa.Column("max_storage_mb", sa.Integer, nullable=True),
    sa.Column("weight", sa.Double, nullable=True),
)

api_keys = sa.Table(
    "api_keys", metadata,
    sa.Column("digest", sa.String(64), primary_key=True),  # sha256 of the key: the key itself is never stored
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("tenant", sa.String(200), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("scope", sa.String(16), nullable=False, server_default="write"),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("expires_at", sa.Double, nullable=True),
    sa.Column("last_used_at", sa.Double, nullable=True),
    sa.Column("revoked_at", sa.Double, nullable=True),
)

# One row per ended job, written once by the recorder (insert-or-ignore by id: a batch read twice after a
# recorder died writes nothing twice). ``extra`` holds the rest of the Redis record (limits, webhook,
# progress...), so a job read back from here shows the same JSON as from Redis.
jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.String(100), primary_key=True),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("queue", sa.String(16), nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("started_at", sa.Double, nullable=True),
    sa.Column("finished_at", sa.Double, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("worker", sa.String(300), nullable=True),
    sa.Column("message", sa.Text, nullable=False, server_default=""),
    sa.Column("error_type", sa.String(200), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("parameters", sa.Text, nullable=False, server_default="{}"),  # JSON; files are artifact references
    sa.Column("result", sa.Text, nullable=True),  # JSON
    sa.Column("artifacts", sa.Text, nullable=True),  # JSON list of {name, media_type, bytes}
    sa.Column("parent", sa.String(100), nullable=True, index=True),
    sa.Column("children", sa.Text, nullable=True),  # JSON list of ids
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("document", sa.String(400), nullable=True),
    sa.Column("extra", sa.Text, nullable=False, server_default="{}"),
    sa.Column("recorded_at", sa.Double, nullable=False),
    # Keyset pages newest first, per tenant, with or without a status or type filter (no OFFSET).
    sa.Index("ix_jobs_tenant_created", "tenant", "created_ms", "id"),
    sa.Index("ix_jobs_tenant_status_created", "tenant", "status", "created_ms", "id"),
    sa.Index("ix_jobs_tenant_type_created", "tenant", "type", "created_ms", "id"),
    sa.Index("ix_jobs_finished", "finished_at"),  # the retention sweep
)

documents = sa.Table(
    "documents", metadata,
    sa.Column("tenant", sa.String(200), primary_key=True),
    sa.Column("id", sa.String(100), primary_key=True),
    sa.Column("status", sa.String(32), nullable=True),
    sa.Column("job_id", sa.String(100), nullable=True),
    sa.Column("record", sa.Text, nullable=False),  # JSON of the Redis record's fields
    sa.Column("updated_at", sa.Double, nullable=False),
)

# Per tenant, UTC day, type and queue: counted when a job's row is first inserted (in its transaction).
usage = sa.Table(
    "usage", metadata,
    sa.Column("tenant", sa.String(200), primary_key=True),
    sa.Column("day", sa.String(10), primary_key=True),
    sa.Column("type", sa.String(100), primary_key=True),
    sa.Column("queue", sa.String(16), primary_key=True),
    sa.Column("jobs", sa.Integer, nullable=False, server_default="0"),
    sa.Column("seconds", sa.Double, nullable=False, server_default="0"),
    sa.Column("succeeded", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
    sa.Column("revoked", sa.Integer, nullable=False, server_default="0"),
)

# One row per delivery attempt of a job's webhook (worker/webhooks.py), handed over through the history
# stream like ended jobs; the status document shows them once Redis forgot the job.
webhook_deliveries = sa.Table(
    "webhook_deliveries", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(100), nullable=False, index=True),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("event", sa.String(32), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", sa.String(40), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("delivered", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    # The history stream entry it came from (0002): insert-or-ignore by it, as jobs by their id.
    sa.Column("stream_id", sa.String(40), nullable=True, unique=True, index=True),
)
