"""The store of record's first schema: tenants, API keys, jobs, documents, usage, webhook deliveries.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("history_retention_days", sa.Integer, nullable=True),
    )
    op.create_table(
        "api_keys",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("scope", sa.String(16), nullable=False, server_default="write"),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("expires_at", sa.Double, nullable=True),
        sa.Column("last_used_at", sa.Double, nullable=True),
        sa.Column("revoked_at", sa.Double, nullable=True),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"])
    op.create_table(
        "jobs",
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
        sa.Column("parameters", sa.Text, nullable=False, server_default="{}"),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("artifacts", sa.Text, nullable=True),
        sa.Column("parent", sa.String(100), nullable=True),
        sa.Column("children", sa.Text, nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("document", sa.String(400), nullable=True),
        sa.Column("extra", sa.Text, nullable=False, server_default="{}"),
        sa.Column("recorded_at", sa.Double, nullable=False),
    )
    op.create_index("ix_jobs_parent", "jobs", ["parent"])
    op.create_index("ix_jobs_tenant_created", "jobs", ["tenant", "created_ms", "id"])
    op.create_index("ix_jobs_tenant_status_created", "jobs", ["tenant", "status", "created_ms", "id"])
    op.create_index("ix_jobs_tenant_type_created", "jobs", ["tenant", "type", "created_ms", "id"])
    op.create_index("ix_jobs_finished", "jobs", ["finished_at"])
    op.create_table(
        "documents",
        sa.Column("tenant", sa.String(200), primary_key=True),
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("status", sa.String(32), nullable=True),
        sa.Column("job_id", sa.String(100), nullable=True),
        sa.Column("record", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Double, nullable=False),
    )
    op.create_table(
        "usage",
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
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.String(100), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at", sa.String(40), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=True),
        sa.Column("delivered", sa.Boolean, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_webhook_deliveries_job_id", "webhook_deliveries", ["job_id"])


def downgrade() -> None:
    for table in ("webhook_deliveries", "usage", "documents", "jobs", "api_keys", "tenants"):
        op.drop_table(table)
