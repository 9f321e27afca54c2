"""Per-tenant flow-control limits (issue 18) on the tenants table, each nullable: None is the deployment's
default (settings.py). store/tenant_limits.py reads and writes them; the API enforces max_queued,
submits_per_s and burst so far, the other columns wait for the rest of the issue.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = (("max_running", sa.Integer), ("max_queued", sa.Integer), ("submits_per_s", sa.Double),
           ("burst", sa.Integer), ("max_streams", sa.Integer), ("max_storage_mb", sa.Integer),
           ("weight", sa.Double))


def upgrade() -> None:
    for name, kind in COLUMNS:
        op.add_column("tenants", sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:  # SQLite drops columns by copying the table
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
