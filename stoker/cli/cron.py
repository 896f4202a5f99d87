"""Cron schedules from the command line: `stoker cron ls`."""

from __future__ import annotations

from typing import Any

import click

from stoker.cli import cli
from stoker.cli.output import FORMAT, handles_errors, print_json, show_time, table

COLUMNS = ["schedule", "expression", "timezone", "missed", "last_fired", "next"]
HEADERS = ["SCHEDULE", "EXPRESSION", "TIMEZONE", "MISSED", "LAST FIRED", "NEXT FIRE TIMES"]


@cli.group()
def cron() -> None:
    """Cron schedules (triggers of type "cron")."""


@cron.command("ls")
@click.option("--next", "count", type=click.IntRange(1, 100), default=3, show_default=True,
              help="how many upcoming fire times to show")
@FORMAT
@handles_errors
def ls(count: int, fmt: str) -> None:
    """Every schedule with its next fire times, in its own time zone (or all in UTC with --utc, or
    in this machine's with --local)."""
    from stoker.client import Client

    schedules = Client().schedules(count)
    if fmt == "json":
        print_json(schedules)
        return
    if not schedules:
        click.echo("no schedules: add a [[triggers]] table with type = \"cron\" to a function's stoker.toml")
        return
    click.echo(render(schedules))


def render(schedules: list[dict[str, Any]]) -> str:
    rows: list[dict[str, Any]] = []
    for s in schedules:
        times = [show_time(t, keep_offset=True) for t in s["next_local"]] or ["(never)"]
        rows.append({**s, "next": times[0]})
        # continuation rows carry only the next fire time: blank, not "-", in the other columns
        rows.extend({**dict.fromkeys(COLUMNS, ""), "next": t} for t in times[1:])
    return table(rows, COLUMNS, HEADERS)
