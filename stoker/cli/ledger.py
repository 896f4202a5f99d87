"""The ledger and logs from the command line."""

from __future__ import annotations

import sys

import click

from stoker.cli import cli
from stoker.cli.output import handles_errors, print_json, table, to_csv
from stoker.errors import InvalidInput
from stoker.platform.ledger.models import ROW_FIELDS
from stoker.platform.ledger.records import STATUSES
from stoker.platform.timeparse import iso, parse_time

TABLE_COLUMNS = ["id", "function", "version", "status", "trigger", "received_at", "duration_ms", "cold",
                 "attempts", "error_type"]


def _time_option(value: str | None, option: str) -> str | None:
    if value is None:
        return None
    try:
        return iso(parse_time(value, option))
    except InvalidInput as e:
        raise click.BadParameter(e.message, param_hint=option) from None


@cli.group(invoke_without_command=True)
@click.option("--function", default=None, help="only this function")
@click.option("--version", "version", default=None, help="only this version")
@click.option("--status", type=click.Choice(STATUSES), default=None, help="only this status")
@click.option("--trigger", default=None, help="only this trigger (api, http, queue, files, cron, ...)")
@click.option("--node", default=None, help="only this node")
@click.option("--cold/--warm", "cold", default=None, help="only cold (or warm) starts")
@click.option("--since", default=None, help="ISO 8601, or a duration ago: 30s, 10m, 2h, 7d")
@click.option("--until", default=None, help="ISO 8601, or a duration ago")
@click.option("--limit", type=click.IntRange(1, 100_000), default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.pass_context
@handles_errors
def ledger(ctx: click.Context, function: str | None, version: str | None, status: str | None,
           trigger: str | None, node: str | None, cold: bool | None, since: str | None, until: str | None,
           limit: int, fmt: str) -> None:
    """Invocations, newest first. `stoker ledger show ID` shows one in full."""
    if ctx.invoked_subcommand is not None:
        return
    from stoker.client import Client

    rows = Client().invocations(function=function, version=version, status=status, trigger=trigger, node=node,
                                cold=cold, since=_time_option(since, "--since"),
                                until=_time_option(until, "--until"), limit=limit)
    if fmt == "json":
        print_json(rows)
    elif fmt == "csv":
        sys.stdout.write(to_csv(rows, ROW_FIELDS))
    else:
        click.echo(table(rows, TABLE_COLUMNS))


@ledger.command("show")
@click.argument("invocation_id")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handles_errors
def ledger_show(invocation_id: str, fmt: str) -> None:
    """One invocation: its row, every attempt, and its log lines."""
    from stoker.client import Client

    row = Client().invocation(invocation_id)
    if fmt == "json":
        print_json(row)
        return
    for key in ROW_FIELDS:
        if key == "attempts":
            continue
        click.echo(f"{key:>15}: {'-' if row.get(key) is None else row.get(key)}")
    click.echo("\nattempts:")
    click.echo(table(row.get("attempts") or [], ["attempt", "node", "worker", "started_at", "duration_ms",
                                                  "outcome", "error_type"]))
    click.echo("\nlogs:")
    for line in row.get("logs") or []:
        click.echo(f"  {line}")


@cli.command()
@click.argument("name")
@click.option("--tail", type=click.IntRange(0, 1_000_000), default=None, help="only the last N lines")
@click.option("--since", default=None, help="ISO 8601, or a duration ago: 30s, 10m, 2h, 7d")
@click.option("--request-id", default=None, help="only the lines of this invocation")
@click.option("--follow", "-f", is_flag=True, help="keep printing new lines until interrupted")
@handles_errors
def logs(name: str, tail: int | None, since: str | None, request_id: str | None, follow: bool) -> None:
    """A function's log lines, oldest first."""
    from stoker.client import Client
    from stoker.platform.logstream import LogLine

    c = Client()
    since_iso = _time_option(since, "--since")

    def show(line: dict[str, object]) -> None:
        text = LogLine(int(line["timestamp"]), str(line["request_id"]), str(line["message"])).render()  # type: ignore[call-overload]
        click.echo(text)

    if not follow:
        for line in c.logs(name, tail=tail, since=since_iso, request_id=request_id):
            show(line)
        return
    for line in c.follow_logs(name, tail=tail, since=since_iso, request_id=request_id):
        show(line)
        sys.stdout.flush()
