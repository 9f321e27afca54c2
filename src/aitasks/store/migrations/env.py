"""Alembic's environment for aitasks: always given a connection by aitasks.store.migrate (no ini file)."""

from __future__ import annotations

from alembic import context

from aitasks.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the migrations through `aitasks db upgrade` (aitasks.store.migrate)")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
