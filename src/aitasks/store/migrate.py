"""Schema migrations (Alembic, shipped in the package: no alembic.ini for users), applied by
``aitasks db upgrade`` and at the start of ``aitasks run``, ``api`` and ``worker``.

Several processes may start at once: the upgrade runs under a lock (a file lock beside a SQLite file,
an advisory lock on PostgreSQL). A database at a revision this code does not know (written by a newer
aitasks) is refused, never downgraded or written to.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from aitasks.errors import ConfigurationError
from aitasks.store import engine as engines

log = logging.getLogger("aitasks.store")
MIGRATIONS = Path(__file__).parent / "migrations"
PG_LOCK_ID = 0x61697461736B73  # "aitasks": one advisory lock for every upgrader of this database


class SchemaTooNew(ConfigurationError):
    """The database was migrated by a newer aitasks than this one."""


def config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head() -> str:
    revision = ScriptDirectory.from_config(config()).get_current_head()
    assert revision is not None
    return revision


def current(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def check_known(connection: sa.Connection, url: str) -> str | None:
    """The database's revision; SchemaTooNew when this code does not know it."""
    revision = current(connection)
    if revision is None:
        return None
    try:
        ScriptDirectory.from_config(config()).get_revision(revision)
    except CommandError:
        raise SchemaTooNew(
            f"the database at {engines.shown(url)} is at schema revision {revision!r}, newer than this "
            f"aitasks knows (its newest is {head()!r}); run the newer aitasks, or point AITASKS_DATABASE_URL "
            "at another database. Nothing was changed.") from None
    return revision


@contextlib.contextmanager
def _locked(url: str, connection: sa.Connection) -> Iterator[None]:
    target = engines.driver_url(url)
    if target.get_backend_name() == "sqlite" and target.database not in (None, "", ":memory:"):
        lock_path = Path(f"{target.database}.migrate-lock")
        with open(lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elif target.get_backend_name() == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": PG_LOCK_ID})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": PG_LOCK_ID})
            connection.commit()
    else:
        yield


def upgrade(url: str, revision: str = "head") -> str:
    """Apply the migrations up to ``revision``; returns the revision the database is at."""
    engine = engines.create(url)
    try:
        with engine.connect() as connection, _locked(url, connection):
            check_known(connection, url)
            cfg = config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)
            connection.commit()
            return current(connection) or ""
    finally:
        engine.dispose()


def upgrade_with_retry(url: str, give_up_s: float | None = None, stopping: Callable[[], bool] = lambda: False) -> str:
    """``upgrade``, retried while the database cannot be reached (one log line a try, backoff to 10 s);
    SchemaTooNew is raised at once. ``give_up_s`` None: retry until ``stopping()``."""
    started = time.monotonic()
    delay = 1.0
    while True:
        try:
            return upgrade(url)
        except sa.exc.OperationalError as exc:
            waited = time.monotonic() - started
            if stopping() or (give_up_s is not None and waited + delay > give_up_s):
                raise ConfigurationError(
                    f"the database at {engines.shown(url)} cannot be reached: {_first_line(exc)}") from None
            log.warning("the database at %s cannot be reached (%s); trying again in %.0f s (job history waits; "
                        "jobs do not)", engines.shown(url), _first_line(exc), delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
