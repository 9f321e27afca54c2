"""Alembic migrations of the store of record (see aitasks.store.migrate)."""
