"""Cron schedules from the command line: `stoker cron ls`."""

from __future__ import annotations

from typing import Any

import click

from stoker.cli import cli
from stoker.cli.output import FORMAT, handles_errors, print_json, table

COLUMNS = ["schedule", "expression", "timezone", "missed", "last_fired", "next"]
HEADERS = ["SCHEDULE", "EXPRESSION", "TIMEZONE", "MISSED", "LAST FIRED (UTC)", "NEXT FIRE TIMES (LOCAL)"]


@cli.group()
def cron() -> None:
    """Cron schedules (triggers of type "cron")."""


@cron.command("ls")
@click.option("--next", "count", type=click.IntRange(1, 100), default=3, show_default=True,
              help="how many upcoming fire times to show")
@FORMAT
@handles_errors
def ls(count: int, fmt: str) -> None:
    """Every schedule with its next fire times, in its own time zone."""
    from stoker.client import Client

    schedules = Client().schedules(count)
    if fmt == "json":
        print_json(schedules)
        return
    if not schedules:
        click.echo("no schedules: add a [[triggers]] table with type = \"cron\" to a function's stoker.toml")
        return
    rows: list[dict[str, Any]] = []
    for s in schedules:
        times = [t.replace("T", " ") for t in s["next_local"]] or ["(never)"]
        rows.append({**s, "next": times[0]})
        rows.extend({"next": t} for t in times[1:])
    click.echo(table(rows, COLUMNS, HEADERS))
