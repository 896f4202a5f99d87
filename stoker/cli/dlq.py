"""`stoker dlq`: a function's dead letters, and sending them back."""

from __future__ import annotations

import click

from stoker.cli import cli
from stoker.cli.output import FORMAT, DefaultCommandGroup, handles_errors, print_json, table


@cli.group(cls=DefaultCommandGroup)
def dlq() -> None:
    """Dead letters: async events whose retries ran out.

    `stoker dlq NAME` lists them; `stoker dlq redrive NAME [--id ID]` sends them back.
    """


@dlq.command("list")
@click.argument("name")
@FORMAT
@handles_errors
def dlq_list(name: str, fmt: str) -> None:
    """List NAME's dead letters, oldest first."""
    from stoker.client import Client

    rows = Client().dead_letters(name)
    if fmt == "json":
        print_json(rows)
        return
    for r in rows:
        r["error_type"] = (r.get("error") or {}).get("errorType")
    click.echo(table(rows, ["id", "version", "attempts", "reason", "error_type", "failed_at"]))


@dlq.command("redrive")
@click.argument("name")
@click.option("--id", "invocation_id", default=None, help="only this invocation's dead letter")
@handles_errors
def dlq_redrive(name: str, invocation_id: str | None) -> None:
    """Send NAME's dead letters back as new async invocations (of its current version)."""
    from stoker.client import Client

    moved = Client().redrive_dead_letters(name, invocation_id)
    for m in moved:
        click.echo(f"{m['id']} -> {m['new_id']}")
    click.echo(f"redriven: {len(moved)}")
