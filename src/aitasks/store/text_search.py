"""The index behind the history's ``q`` filter (text in a job's message or error, any case), one per backend,
made by migration 0003 and kept outside ``schema.metadata`` (SQLAlchemy Core has no words for either):

- PostgreSQL: ``pg_trgm`` GIN indexes on ``jobs.message`` and ``jobs.error``, which serve ``ILIKE '%...%'``.
  Without the extension (a server that lacks it, a role that may not create it) the filter scans, as
  before, and the migration says so.
- SQLite: an FTS5 table with the trigram tokenizer (``jobs_text``: the job's id and its message and error),
  filled by triggers on ``jobs``.

Neither planner can tell a rare text from a common one, so ``records.list_jobs`` probes first: the newest
``PROBE_ROWS`` rows of the page's range, filtered in order (a common text fills the page there); only a page
the probe cannot fill asks the index for its ids.

Either way the exact ``ILIKE`` filter still applies to every row returned: the index only narrows.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from aitasks.store.schema import jobs

log = logging.getLogger("aitasks.store")

FTS_TABLE = "jobs_text"
TRGM_INDEXES = ("ix_jobs_message_trgm", "ix_jobs_error_trgm")
PROBE_ROWS = 500
MIN_CHARS = 3  # a trigram index cannot narrow a shorter text: it scans


def objects() -> set[str]:
    """The names this module's migration makes (a schema comparison leaves them out)."""
    fts = {FTS_TABLE, *(f"{FTS_TABLE}_{part}" for part in ("data", "idx", "content", "docsize", "config"))}
    return fts | set(TRGM_INDEXES)


def create(connection: sa.Connection) -> None:
    """Make the backend's index and fill it from the rows already there (migration 0003)."""
    if connection.dialect.name == "postgresql":
        _create_trgm(connection)
    else:
        _create_fts(connection)


def _create_trgm(connection: sa.Connection) -> None:
    try:
        with connection.begin_nested():
            connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except sa.exc.DBAPIError as exc:
        log.warning("the history's text filter (q) will scan: pg_trgm cannot be created here (%s)",
                    str(exc).splitlines()[0])
        return
    for name, column in zip(TRGM_INDEXES, ("message", "error"), strict=True):
        connection.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {name} ON jobs USING gin ({column} gin_trgm_ops)")


def _create_fts(connection: sa.Connection) -> None:
    connection.exec_driver_sql(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(id UNINDEXED, text, tokenize='trigram')")
    # The FTS row takes the job row's rowid, so a delete finds it without a scan. OR REPLACE: a rowid reused
    # after a VACUUM renumbered the jobs replaces the stale row instead of failing the recorder's batch (and
    # the id column, not the rowid, maps a match back to its job).
    connection.exec_driver_sql(f"""
        CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_insert AFTER INSERT ON jobs BEGIN
          INSERT OR REPLACE INTO {FTS_TABLE}(rowid, id, text)
          VALUES (new.rowid, new.id, new.message || char(10) || coalesce(new.error, ''));
        END""")
    connection.exec_driver_sql(f"""
        CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_delete AFTER DELETE ON jobs BEGIN
          DELETE FROM {FTS_TABLE} WHERE rowid = old.rowid;
        END""")
    connection.exec_driver_sql(f"""
        INSERT OR REPLACE INTO {FTS_TABLE}(rowid, id, text)
        SELECT rowid, id, message || char(10) || coalesce(error, '') FROM jobs""")


def drop(connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        for name in TRGM_INDEXES:
            connection.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
    else:
        for trigger in ("insert", "delete"):
            connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {FTS_TABLE}_{trigger}")
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {FTS_TABLE}")


def matches(connection: sa.Connection, q: str, holds: sa.ColumnElement[bool]) -> sa.Select[Any] | None:
    """The ids of the jobs whose message or error holds ``q``, through the backend's index; None when there
    is none to use (``q`` too short, or PostgreSQL without the trigram indexes: the caller scans).
    ``holds`` is the exact test on ``jobs``: PostgreSQL's index serves it directly, in a MATERIALIZED CTE
    so the planner runs it as the bitmap scan it is, not as a filter on the tenant's ordered index (it
    cannot tell how rare a text is, and took the scan: 0.5 s for a rare text over 1,000,000 rows)."""
    if len(q) < MIN_CHARS:
        return None
    if connection.dialect.name != "postgresql":
        return sqlite_matches(q)
    if not _has_trgm(connection):
        return None
    found = sa.select(jobs.c.id).where(holds).cte("q_matches").prefix_with("MATERIALIZED")
    return sa.select(found.c.id)


def _has_trgm(connection: sa.Connection) -> bool:
    key = "aitasks_has_trgm"
    if key not in connection.info:
        names: set[str] = set(connection.exec_driver_sql(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'").scalars())
        connection.info[key] = set(TRGM_INDEXES) <= names
    return bool(connection.info[key])


def sqlite_matches(q: str) -> sa.Select[Any] | None:
    """The ids of the jobs whose message or error holds ``q`` (any case), from the FTS table; None when ``q``
    is too short for the index. A phrase of trigrams: ``q`` quoted, its quotes doubled."""
    if len(q) < MIN_CHARS:
        return None
    phrase = '"' + q.replace('"', '""') + '"'
    return (sa.select(sa.column("id", sa.String)).select_from(sa.table(FTS_TABLE))
            .where(sa.text(f"{FTS_TABLE} MATCH :phrase").bindparams(phrase=phrase)))
