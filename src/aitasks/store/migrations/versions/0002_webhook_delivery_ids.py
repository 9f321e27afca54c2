"""The webhook delivery log written by the recorder: each attempt keyed by its history stream entry, so a
batch written again after a recorder died inserts nothing twice.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("webhook_deliveries") as batch:  # SQLite rebuilds the table; PostgreSQL alters it
        batch.add_column(sa.Column("stream_id", sa.String(40), nullable=True))
        batch.create_index("ix_webhook_deliveries_stream_id", ["stream_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("webhook_deliveries") as batch:
        batch.drop_index("ix_webhook_deliveries_stream_id")
        batch.drop_column("stream_id")
