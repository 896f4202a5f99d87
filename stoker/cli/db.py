"""`stoker db`: the platform's SQL database (and, with the dbchanges trigger, users' databases)."""

from __future__ import annotations

import click

from stoker.cli import cli
from stoker.cli.output import handles_errors
from stoker.settings import Settings


@cli.group()
def db() -> None:
    """The SQL database: schema migrations."""


@db.command("migrate")
@handles_errors
def db_migrate() -> None:
    """Bring STOKER_DB_URL (default: SQLite in STOKER_HOME) to the current schema."""
    from stoker.platform.db import current_revision, migrate

    settings = Settings.from_env()
    migrate(settings.db_url)
    click.echo(f"database at revision {current_revision(settings.db_url)}")
