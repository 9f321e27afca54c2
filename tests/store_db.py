"""Databases for the store-of-record tests: a fresh SQLite file, or a fresh database on a private
PostgreSQL (tests/pg_server.py, one server per test module)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pg_server import PgServer, running_postgres

BACKENDS = [pytest.param("sqlite", id="sqlite"), pytest.param("postgresql", id="postgresql", marks=pytest.mark.slow)]


def new_pg_database(server: PgServer) -> str:
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="module")
def pg_lazy() -> Iterator[Callable[[], PgServer]]:
    """A PostgreSQL started on first use only (the SQLite cases need none)."""
    holder: dict[str, PgServer] = {}
    stack: list[object] = []

    def get() -> PgServer:
        if "server" not in holder:
            cm = running_postgres()
            holder["server"] = cm.__enter__()
            stack.append(cm)
        return holder["server"]

    yield get
    for cm in stack:
        cm.__exit__(None, None, None)  # type: ignore[attr-defined]


def database_url(backend: str, tmp_path: Path, pg: Callable[[], PgServer]) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'store' / 'aitasks.db'}"
    return new_pg_database(pg())
