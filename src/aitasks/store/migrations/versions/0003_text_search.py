"""An index for the history's text filter (``q``): pg_trgm GIN indexes on PostgreSQL, an FTS5 trigram
table filled by triggers on SQLite (store/text_search.py says why each).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

from aitasks.store import text_search

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    text_search.create(op.get_bind(), sort_key=False)  # 0004 adds the FTS table's created ms


def downgrade() -> None:
    text_search.drop(op.get_bind())
