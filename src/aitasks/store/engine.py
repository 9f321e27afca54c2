"""Opening the store of record: the URL mapped to its driver, SQLite tuned for several processes."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url


def driver_url(url: str) -> sa.URL:
    """``postgresql://`` (and ``postgres://``) through psycopg 3; SQLite as given."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def is_sqlite(url: str | sa.URL) -> bool:
    return driver_url(url if isinstance(url, str) else url.render_as_string(False)).get_backend_name() == "sqlite"


def shown(url: str) -> str:
    """The URL for log lines and errors: never its password."""
    return driver_url(url).render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: readers (the API) never block the writer (the recorder) and the reverse; a busy timeout instead
    # of "database is locked" when two recorders commit at once; NORMAL sync is durable in WAL mode
    # except for the last commits on power loss, which the Redis Stream still holds until acknowledged.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


def create(url: str, connect_timeout_s: float = 5.0) -> sa.Engine:
    """A new engine for ``url`` (the caller disposes of it)."""
    target = driver_url(url)
    if target.get_backend_name() == "sqlite":
        if target.database and target.database != ":memory:":
            Path(target.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(target, connect_args={"timeout": 15, "check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(target, pool_pre_ping=True, pool_size=5, max_overflow=5,
                            connect_args={"connect_timeout": max(1, int(connect_timeout_s))})


@functools.cache
def shared(url: str) -> sa.Engine:
    """One engine per URL and process (the API's history reads)."""
    return create(url)
