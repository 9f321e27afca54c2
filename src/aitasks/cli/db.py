"""`aitasks db`: the store of record's schema (docs/history.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from aitasks.errors import ConfigurationError

db_app = typer.Typer(help="The store of record (job history, keys, documents): its schema.", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade(
    wait_s: Annotated[float, typer.Option(help="How long to wait for a database that is down.")] = 60.0,
) -> None:
    """Apply the migrations to AITASKS_DATABASE_URL (default: SQLite under the data directory)."""
    from aitasks.logs import setup_logging
    from aitasks.settings import get_settings
    from aitasks.store import engine, migrate

    settings = get_settings()
    setup_logging(settings.log_level, "db")
    url = settings.resolved_database_url
    try:
        revision = migrate.upgrade_with_retry(url, give_up_s=wait_s)
    except ConfigurationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"{engine.shown(url)}: schema revision {revision} (the newest this aitasks knows)")


@db_app.command("current")
def current() -> None:
    """The database's schema revision and the newest this aitasks knows."""
    import sqlalchemy as sa

    from aitasks.settings import get_settings
    from aitasks.store import engine, migrate

    url = get_settings().resolved_database_url
    db = engine.create(url)
    try:
        with db.connect() as connection:
            revision = migrate.current(connection)
    except sa.exc.OperationalError as exc:
        typer.echo(f"error: cannot reach {engine.shown(url)}: {migrate._first_line(exc)}", err=True)
        raise typer.Exit(2) from None
    finally:
        db.dispose()
    typer.echo(f"{engine.shown(url)}: schema revision {revision or 'none (empty)'}; this aitasks: {migrate.head()}")


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
