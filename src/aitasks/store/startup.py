"""The schema at a process's start (``aitasks run``, ``api``, ``worker``): migrated when the database
answers, refused when it is newer than this code, and waited for in the background when it is down, so
neither submits nor jobs wait on SQL (only the history does)."""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa

from aitasks.store import engine as engines
from aitasks.store import migrate

log = logging.getLogger("aitasks.store")


def at_start(url: str, retry_in_background: bool = True) -> bool:
    """Upgrade the schema now; True when done. SchemaTooNew propagates (the caller exits saying why).
    When the database cannot be reached: a log line, and (``retry_in_background``) a thread that keeps
    trying; False."""
    try:
        revision = migrate.upgrade(url)
        log.info("store of record: %s at schema revision %s", engines.shown(url), revision)
        return True
    except sa.exc.OperationalError as exc:
        log.warning("store of record: the database at %s cannot be reached (%s); %s", engines.shown(url),
                    migrate._first_line(exc),
                    "trying again in the background (job history waits; jobs do not)" if retry_in_background
                    else "the recorder keeps trying (job history waits; jobs do not)")
    if retry_in_background:
        threading.Thread(target=_retry, args=(url,), name="aitasks-db-upgrade", daemon=True).start()
    return False


def _retry(url: str) -> None:
    try:
        revision = migrate.upgrade_with_retry(url)
        log.info("store of record: %s at schema revision %s", engines.shown(url), revision)
    except Exception as exc:  # SchemaTooNew found late: history stays off, said once
        log.error("store of record is off: %s", exc)
