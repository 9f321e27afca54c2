"""Per-tenant flow-control limits in the store of record (the ``tenants`` table, migration 0005): written
here first (``aitasks tenants set``), then cached in Redis (jobs/limits.py), where the API reads them on
every submit without touching SQL. A limit left unset (NULL) is the deployment's default (settings.py)."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from aitasks.store.schema import tenants

# Each limit and its kind: what ``aitasks tenants set`` takes, the columns, the Redis hash's fields.
LIMITS: dict[str, type[int] | type[float]] = {
    "max_running": int, "max_queued": int, "submits_per_s": float, "burst": int,
    "max_streams": int, "max_storage_mb": int, "weight": float,
}
# What the API enforces so far; the others are stored and shown, and wait for the rest of issue 18.
ENFORCED = ("max_running", "max_queued", "submits_per_s", "burst", "max_streams", "max_storage_mb", "weight")


def check(values: dict[str, Any]) -> dict[str, int | float | None]:
    """The values as their kinds; ValueError naming the first unknown or negative one (None: the default)."""
    out: dict[str, int | float | None] = {}
    for name, value in values.items():
        kind = LIMITS.get(name)
        if kind is None:
            raise ValueError(f"{name} is not a tenant limit (one of: {', '.join(LIMITS)})")
        if value is None:
            out[name] = None
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{name} must be a number, not {value!r}")
        if value < 0 or value != value or value == float("inf"):
            raise ValueError(f"{name} must be 0 or more (0: no limit), not {value:g}")
        if kind is int and value != int(value):
            raise ValueError(f"{name} must be a whole number, not {value:g}")
        out[name] = kind(value)
    return out


def set_limits(engine: sa.Engine, tenant: str, values: dict[str, Any]) -> dict[str, int | float | None]:
    """Set the given limits of ``tenant`` (None: back to the default), creating its row if need be; the
    others stay. Returns all its limits as stored now."""
    checked = check(values)
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    with engine.begin() as connection:
        insert = dialect.insert(tenants).values(id=tenant, created_at=time.time(), **checked)
        if checked:
            connection.execute(insert.on_conflict_do_update(index_elements=["id"], set_=checked))
        else:
            connection.execute(insert.on_conflict_do_nothing(index_elements=["id"]))
        return _read(connection, tenant) or {}


def _read(connection: sa.Connection, tenant: str) -> dict[str, int | float | None] | None:
    row = connection.execute(sa.select(*(tenants.c[name] for name in LIMITS)).where(tenants.c.id == tenant)).first()
    if row is None:
        return None
    return {name: None if row._mapping[name] is None else LIMITS[name](row._mapping[name]) for name in LIMITS}


def get_limits(engine: sa.Engine, tenant: str) -> dict[str, int | float | None] | None:
    """The tenant's own limits (None for each one it has not set); None when the store has no such tenant."""
    with engine.connect() as connection:
        return _read(connection, tenant)


def all_limits(engine: sa.Engine) -> dict[str, dict[str, int | float]]:
    """Every tenant with a limit of its own: its set limits only (what Redis caches)."""
    columns = [tenants.c[name] for name in LIMITS]
    query = sa.select(tenants.c.id, *columns).where(sa.or_(*(c.is_not(None) for c in columns)))
    with engine.connect() as connection:
        return {str(row.id): {name: LIMITS[name](row._mapping[name]) for name in LIMITS
                              if row._mapping[name] is not None}
                for row in connection.execute(query)}
