"""SQLite: the history's FTS table holds each job's created ms, so a ``q`` page takes its matches newest
first and looks up only the jobs it may show (store/text_search.py). The table is made again and refilled
from the jobs (8 s for 1,000,000 rows on this 2-core machine). PostgreSQL: nothing to do.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

from aitasks.store import text_search

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    text_search.rebuild_fts(op.get_bind(), sort_key=True)


def downgrade() -> None:
    text_search.rebuild_fts(op.get_bind(), sort_key=False)
