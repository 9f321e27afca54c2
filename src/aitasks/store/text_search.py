"""The index behind the history's ``q`` filter (text in a job's message or error, any case), one per backend,
made by migration 0003 and kept outside ``schema.metadata`` (SQLAlchemy Core has no words for either).
Both hold the tenant beside the text, so a text common in other tenants' history but rare in the reader's
costs the reader's matches, not everyone's (without it: 0.1 s a page over 1,000,000 rows):

- PostgreSQL: one GIN index on ``(tenant, message, error)``, ``btree_gin`` for the tenant and ``pg_trgm``
  for the texts, which serves ``tenant = ... AND ILIKE '%...%'``. Without ``btree_gin`` the index leaves
  the tenant out; without ``pg_trgm`` (a server that lacks it, a role that may not create it) there is
  none and the filter scans, as before. The migration says which.
- SQLite: an FTS5 table with the trigram tokenizer (``jobs_text``: the job's id and created ms, its tenant
  between ``|`` marks, which no tenant name holds, and its message and error), filled by triggers on
  ``jobs``. The created ms (migration 0004) lets a page take the matches newest first, a chunk at a time,
  and look up only the jobs it may show (not every match: 7 -> 5 ms for 888 matches).

Neither planner can tell a rare text from a common one, so ``records.list_jobs`` probes first: the newest
``PROBE_ROWS`` rows of the page's range, filtered in order (a common text fills the page there, and a range
of fewer rows needs nothing more); only then does the page ask the index (PostgreSQL: the range narrowed by
its bitmap scan, MATERIALIZED; SQLite: FTS5's matches newest first, ``sqlite_matches``).

Either way the exact tenant and ``ILIKE`` filters still apply to every row returned: the index only narrows.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

log = logging.getLogger("aitasks.store")

FTS_TABLE = "jobs_text"
TRGM_INDEX = "ix_jobs_text_trgm"
PROBE_ROWS = 500
MIN_CHARS = 3  # a trigram index cannot narrow a shorter text: it scans


def objects() -> set[str]:
    """The names this module's migration makes (a schema comparison leaves them out)."""
    fts = {FTS_TABLE, *(f"{FTS_TABLE}_{part}" for part in ("data", "idx", "content", "docsize", "config"))}
    return fts | {TRGM_INDEX}


def create(connection: sa.Connection, *, sort_key: bool = True) -> None:
    """Make the backend's index and fill it from the rows already there (migration 0003; ``sort_key``
    False: 0003's FTS table, without the created ms that 0004 added)."""
    if connection.dialect.name == "postgresql":
        _create_trgm(connection)
    else:
        _create_fts(connection, sort_key)


def rebuild_fts(connection: sa.Connection, *, sort_key: bool) -> None:
    """SQLite: the FTS table made again in the shape asked (migration 0004 and its downgrade), refilled from
    the jobs (8 s for 1,000,000 rows here)."""
    if connection.dialect.name != "postgresql":
        drop(connection)
        _create_fts(connection, sort_key)


def _create_trgm(connection: sa.Connection) -> None:
    if not _extension(connection, "pg_trgm"):
        return
    columns = "message gin_trgm_ops, error gin_trgm_ops"
    if _extension(connection, "btree_gin"):
        columns = f"tenant, {columns}"
    # fastupdate off: with it, new entries wait in a pending list (up to 4 MB) that every search reads
    # whole; under the recorder's steady inserts that list is never empty, and it doubled a page's time.
    connection.exec_driver_sql(
        f"CREATE INDEX IF NOT EXISTS {TRGM_INDEX} ON jobs USING gin ({columns}) WITH (fastupdate = off)")


def _extension(connection: sa.Connection, name: str) -> bool:
    try:
        with connection.begin_nested():
            connection.exec_driver_sql(f"CREATE EXTENSION IF NOT EXISTS {name}")
        return True
    except sa.exc.DBAPIError as exc:
        what = "will scan" if name == "pg_trgm" else "will read every tenant's matches"
        log.warning("the history's text filter (q) %s: %s cannot be created here (%s)",
                    what, name, str(exc).splitlines()[0])
        return False


def _create_fts(connection: sa.Connection, sort_key: bool) -> None:
    key = ", created_ms UNINDEXED" if sort_key else ""
    connection.exec_driver_sql(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(id UNINDEXED{key}, tenant, text, tokenize='trigram')")
    # The FTS row takes the job row's rowid, so a delete finds it without a scan. OR REPLACE: a rowid reused
    # after a VACUUM renumbered the jobs replaces the stale row instead of failing the recorder's batch (and
    # the id column, not the rowid, maps a match back to its job).
    names = f"rowid, id{', created_ms' if sort_key else ''}, tenant, text"
    row = ("{0}rowid, {0}id" + (", {0}created_ms" if sort_key else "") +
           ", '|' || {0}tenant || '|', {0}message || char(10) || coalesce({0}error, '')")
    connection.exec_driver_sql(f"""
        CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_insert AFTER INSERT ON jobs BEGIN
          INSERT OR REPLACE INTO {FTS_TABLE}({names}) VALUES ({row.format('new.')});
        END""")
    connection.exec_driver_sql(f"""
        CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_delete AFTER DELETE ON jobs BEGIN
          DELETE FROM {FTS_TABLE} WHERE rowid = old.rowid;
        END""")
    connection.exec_driver_sql(f"INSERT OR REPLACE INTO {FTS_TABLE}({names}) SELECT {row.format('')} FROM jobs")


def drop(connection: sa.Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"DROP INDEX IF EXISTS {TRGM_INDEX}")
    else:
        for trigger in ("insert", "delete"):
            connection.exec_driver_sql(f"DROP TRIGGER IF EXISTS {FTS_TABLE}_{trigger}")
        connection.exec_driver_sql(f"DROP TABLE IF EXISTS {FTS_TABLE}")


def indexed(connection: sa.Connection, q: str) -> bool:
    """Whether the backend's index can narrow ``q`` (else the caller scans): ``q`` long enough for trigrams,
    and on PostgreSQL the trigram index made (``records._probe_then_index`` reads it)."""
    if len(q) < MIN_CHARS:
        return False
    return connection.dialect.name != "postgresql" or _has_trgm(connection)


def _has_trgm(connection: sa.Connection) -> bool:
    key = "aitasks_has_trgm"
    if key not in connection.info:
        names: set[str] = set(connection.exec_driver_sql(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'").scalars())
        connection.info[key] = TRGM_INDEX in names
    return bool(connection.info[key])


def sqlite_matches(connection: sa.Connection, tenant: str, q: str, before: tuple[int, str] | None,
                   limit: int) -> list[tuple[int, str]]:
    """The (created ms, id) of the tenant's jobs whose message or error holds ``q`` (any case; ``indexed``
    said it is long enough), newest first, older than ``before`` if given, at most ``limit`` of them, from
    the FTS table. Two phrases of trigrams, each quoted with its quotes doubled."""
    match = f"tenant : {_phrase('|' + tenant + '|')} AND text : {_phrase(q)}"
    sql = f"SELECT created_ms, id FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ?"
    args: tuple[Any, ...] = (match,)
    if before is not None:
        sql += " AND (created_ms, id) < (?, ?)"
        args += before
    rows = connection.exec_driver_sql(f"{sql} ORDER BY created_ms DESC, id DESC LIMIT ?", (*args, limit)).all()
    return [(int(row[0]), str(row[1])) for row in rows]


def _phrase(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'
