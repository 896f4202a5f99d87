"""`stoker db`: the platform's SQL database (and, with the dbchanges trigger, users' databases)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from stoker.cli import cli
from stoker.cli.output import FORMAT, handles_errors
from stoker.settings import Settings

if TYPE_CHECKING:
    from stoker.triggers.dbchanges.changelog import ChangeLog


@cli.group()
def db() -> None:
    """SQL databases: the ledger's schema, and change logs in your own databases.

    \b
    migrate                    bring the ledger (STOKER_DB_URL) to the current schema
    watch   --url U --table T  record a table's changes for a `dbchanges` trigger
    unwatch --url U --table T  stop recording them, removing what watch installed
    watches --url U            the watched tables of a database and their consumers

    PostgreSQL needs the postgres extra: pip install 'stoker[postgres]'. See docs/dbchanges.md.
    """


@db.command("migrate")
@handles_errors
def db_migrate() -> None:
    """Bring STOKER_DB_URL (default: SQLite in STOKER_HOME) to the current schema."""
    from stoker.platform.db import current_revision, migrate

    settings = Settings.from_env()
    migrate(settings.db_url)
    click.echo(f"database at revision {current_revision(settings.db_url)}")


# -- change logs in users' databases (the dbchanges trigger) ------------------------------

URL_OPTION = click.option("--url", required=True, envvar="STOKER_WATCH_URL", show_envvar=True,
                          help="the database, as a SQLAlchemy URL: postgresql://user:password@host/db "
                               "or sqlite:////absolute/path.db")
TABLE_OPTION = click.option("--table", required=True, help="the table (PostgreSQL: optionally schema.table)")
TEXT_OR_JSON = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
                            show_default=True)


def _changelog(url: str, table: str) -> ChangeLog:
    from stoker.triggers.dbchanges.changelog import open_changelog
    from stoker.triggers.dbchanges.target import Target

    return open_changelog(Target.parse(url, table, folder="."))


@db.command("watch")
@URL_OPTION
@TABLE_OPTION
@click.option("--columns", default=None, help="capture only these columns (comma-separated; the primary key "
                                              "is always captured). Default: every column")
@TEXT_OR_JSON
@handles_errors
def db_watch(url: str, table: str, columns: str | None, fmt: str) -> None:
    """Install a change log and row triggers on TABLE, for `dbchanges` triggers. Idempotent.

    Every committed INSERT, UPDATE and DELETE of TABLE is then recorded, with the row
    before and after, in the table stoker_changes beside it.
    """
    from stoker.cli.output import print_json

    wanted = [c.strip() for c in columns.split(",") if c.strip()] if columns else None
    log = _changelog(url, table)
    try:
        result = log.install(wanted)
    finally:
        log.dispose()
    if fmt == "json":
        print_json({"table": result.table, "key_columns": result.key_columns, "columns": result.columns,
                    "changed": result.changed, "database": log.target.safe_url})
        return
    captured = ", ".join(result.columns) if result.columns else "every column"
    if result.changed:
        click.echo(f"watching {log.target.describe()}: changes are recorded in stoker_changes "
                   f"(key: {', '.join(result.key_columns)}; images: {captured})")
    else:
        click.echo(f"{log.target.describe()} is already watched with these settings; nothing changed")
    for note in result.notes:
        click.echo(f"note: {note}")


@db.command("unwatch")
@URL_OPTION
@TABLE_OPTION
@handles_errors
def db_unwatch(url: str, table: str) -> None:
    """Remove TABLE's row triggers and its change log rows (stoker's tables too, once none is watched)."""
    log = _changelog(url, table)
    try:
        removed = log.uninstall()
    finally:
        log.dispose()
    if removed:
        click.echo(f"no longer watching {log.target.describe()}")
    else:
        click.echo(f"{log.target.describe()} was not watched; nothing changed")


@db.command("watches")
@URL_OPTION
@FORMAT
@handles_errors
def db_watches(url: str, fmt: str) -> None:
    """List the watched tables of a database, the changes retained and each consumer's unread count."""
    from stoker.cli.output import print_json
    from stoker.cli.output import table as render
    from stoker.triggers.dbchanges.changelog import open_changelog
    from stoker.triggers.dbchanges.target import Target

    log = open_changelog(Target.database(url, folder="."))
    try:
        rows = log.watches()
    finally:
        log.dispose()
    if fmt == "json":
        print_json(rows)
        return
    flat = [{"table": w["table"], "key": w["key_columns"], "columns": w["columns"] or "all",
             "retained": w["retained"], "consumer": c["consumer"], "unread": c["unread"]}
            for w in rows for c in (w["consumers"] or [{"consumer": None, "unread": None}])]
    click.echo(render(flat, ["table", "key", "columns", "retained", "consumer", "unread"]))
