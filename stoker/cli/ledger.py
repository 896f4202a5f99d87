"""The ledger and logs from the command line: `stoker ledger [show|prune|export]`, `stoker logs`."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from stoker.cli import cli
from stoker.cli.output import handles_errors, is_time, print_json, show_time, table, to_csv
from stoker.errors import InvalidInput
from stoker.platform.ledger.models import ROW_FIELDS
from stoker.platform.ledger.queries import MAX_LIMIT, VERSION_RE
from stoker.platform.ledger.records import STATUSES
from stoker.platform.timeparse import ACCEPTED, ACCEPTED_DURATION, iso, parse_duration, parse_time

F = TypeVar("F", bound=Callable[..., Any])

TABLE_COLUMNS = ["id", "function", "version", "status", "trigger", "received_at", "duration_ms", "cold",
                 "attempts", "error_type"]
ATTEMPT_COLUMNS = ["attempt", "node", "worker", "started_at", "duration_ms", "billed_ms", "outcome", "error_type"]


class TimeParam(click.ParamType):
    """ISO 8601 or a duration ago, sent to the platform as ISO 8601 (UTC)."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return iso(parse_time(str(value), "time")) or ""
        except InvalidInput:
            self.fail(f"{value!r} is not a time: use {ACCEPTED}", param, ctx)


class DurationParam(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            parse_duration(str(value), "duration")
        except InvalidInput:
            self.fail(f"{value!r} is not a duration: use {ACCEPTED_DURATION}", param, ctx)
        return str(value)


class VersionParam(click.ParamType):
    name = "VERSION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not VERSION_RE.match(str(value)):
            self.fail(f"{value!r} is not a version number: use 1, 2, ... (the ledger records the version "
                      "that ran, never an alias)", param, ctx)
        return str(value)


TIME = TimeParam()


def filter_options(fn: F) -> F:
    """The ledger's filters, shared by listing and exporting."""
    options = [
        click.option("--function", default=None, help="only this function"),
        click.option("--version", "version", type=VersionParam(), default=None, help="only this version (a number)"),
        click.option("--status", type=click.Choice(STATUSES), default=None, help="only this status"),
        click.option("--trigger", default=None, help="only this trigger (api, http, queue, files, cron, ...)"),
        click.option("--node", default=None, help="only invocations that ran on this node"),
        click.option("--cold/--warm", "cold", default=None, help="only cold (or only warm) starts"),
        click.option("--since", type=TIME, default=None,
                     help="received at or after: ISO 8601, or ago: 30s, 10m, 2h, 7d"),
        click.option("--until", type=TIME, default=None, help="received before: ISO 8601, or ago: 30s, 10m, 2h, 7d"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@cli.group(invoke_without_command=True)
@filter_options
@click.option("--limit", type=click.IntRange(1, MAX_LIMIT), default=50, show_default=True,
              help="at most this many rows")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True,
              help="table for people; json or csv (with a header) for scripts")
@click.pass_context
@handles_errors
def ledger(ctx: click.Context, function: str | None, version: str | None, status: str | None,
           trigger: str | None, node: str | None, cold: bool | None, since: str | None, until: str | None,
           limit: int, fmt: str) -> None:
    """Invocations, newest first.

    `stoker ledger show ID` shows one in full, `stoker ledger export` writes every matching
    row as CSV or Parquet, `stoker ledger prune --older-than 30d` deletes old rows.
    """
    if ctx.invoked_subcommand is not None:
        return
    from stoker.client import Client

    rows = Client().invocations(function=function, version=version, status=status, trigger=trigger, node=node,
                                cold=cold, since=since, until=until, limit=limit)
    if fmt == "json":
        print_json(rows)
    elif fmt == "csv":
        sys.stdout.write(to_csv(rows, ROW_FIELDS))
    else:
        click.echo(table(rows, TABLE_COLUMNS))


@ledger.command("show")
@click.argument("invocation_id")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@handles_errors
def ledger_show(invocation_id: str, fmt: str) -> None:
    """One invocation: its row, every try, its log lines, and its payload and result if retained."""
    from stoker.client import Client

    row = Client().invocation(invocation_id)
    if fmt == "json":
        print_json(row)
        return
    for key in ROW_FIELDS:
        value = row.get("attempt_count") if key == "attempts" else row.get(key)
        if isinstance(value, str) and is_time(value):
            value = show_time(value)
        click.echo(f"{key:>15}: {'-' if value is None else value}")
    click.echo("\nattempts:")
    click.echo(table(row.get("attempts") or [], ATTEMPT_COLUMNS))
    for kind in ("payload", "result"):
        if row.get(kind) is not None:
            cut = " (truncated: only the first 64 KB are kept)" if row.get(f"{kind}_truncated") else ""
            click.echo(f"\n{kind}{cut}:\n  {row[kind]}")
    click.echo("\nlogs:")
    for line in row.get("logs") or []:
        click.echo(f"  {line}")


@ledger.command("prune")
@click.option("--older-than", type=DurationParam(), required=True,
              help="delete invocations received longer ago than this: 30d, 12h, 1w")
@click.option("--dry-run", is_flag=True, help="only count what would be deleted")
@handles_errors
def ledger_prune(older_than: str, dry_run: bool) -> None:
    """Delete old invocations and their attempts from the ledger."""
    from stoker.client import Client

    result = Client().prune_invocations(older_than, dry_run=dry_run)
    if dry_run:
        click.echo(f"would delete {result['invocations']:,} invocations received before {result['before']}")
    else:
        click.echo(f"deleted {result['invocations']:,} invocations ({result['attempts']:,} attempts) "
                   f"received before {result['before']}")


@ledger.command("export")
@filter_options
@click.option("--format", "fmt", type=click.Choice(["csv", "parquet"]), default="csv", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True, path_type=Path), default=None,
              help="the file to write (csv: default stdout; parquet: required)")
@handles_errors
def ledger_export(function: str | None, version: str | None, status: str | None, trigger: str | None,
                  node: str | None, cold: bool | None, since: str | None, until: str | None, fmt: str,
                  output: Path | None) -> None:
    """Every matching invocation, oldest first, for analysis tools (no row limit)."""
    from stoker.client import Client

    if fmt == "parquet":
        if output is None:
            raise click.UsageError("--format parquet writes a binary file: give it with --output FILE")
        write_parquet = _parquet_writer()
    rows = Client().export_invocations(function=function, version=version, status=status, trigger=trigger,
                                       node=node, cold=cold, since=since, until=until)
    if fmt == "parquet":
        assert output is not None
        count = write_parquet(rows, output)
    elif output is None:
        count = _write_csv(rows, sys.stdout)
    else:
        with output.open("w", newline="") as f:
            count = _write_csv(rows, f)
    if output is not None:
        click.echo(f"exported {count:,} invocations to {output}", err=True)


def _write_csv(rows: Iterable[dict[str, Any]], out: Any) -> int:
    count = 0
    out.write(to_csv([], ROW_FIELDS))
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= 5000:
            out.write(to_csv(chunk, ROW_FIELDS).split("\n", 1)[1])
            count, chunk = count + len(chunk), []
    if chunk:
        out.write(to_csv(chunk, ROW_FIELDS).split("\n", 1)[1])
        count += len(chunk)
    return count


def _parquet_writer() -> Callable[[Iterator[dict[str, Any]], Path], int]:
    try:
        import pyarrow as pa  # type: ignore[import-untyped,unused-ignore]
        import pyarrow.parquet as pq  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        raise click.UsageError("--format parquet needs pyarrow: pip install 'stoker[parquet]'") from None
    time_type = pa.timestamp("ms", tz="UTC")
    kinds: dict[str, Any] = {
        "received_at": time_type, "started_at": time_type, "ended_at": time_type, "duration_ms": pa.float64(),
        "init_ms": pa.float64(), "billed_ms": pa.int64(), "memory_mb": pa.int64(), "max_memory_mb": pa.int64(),
        "attempts": pa.int64(), "payload_size": pa.int64(), "result_size": pa.int64(), "cold": pa.bool_(),
    }
    schema = pa.schema([(name, kinds.get(name, pa.string())) for name in ROW_FIELDS])
    times = [name for name, kind in kinds.items() if kind == time_type]

    def when(value: str | None) -> dt.datetime | None:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None

    def write(rows: Iterator[dict[str, Any]], path: Path) -> int:
        count = 0
        with pq.ParquetWriter(str(path), schema) as writer:
            chunk: list[dict[str, Any]] = []
            for row in rows:
                for name in times:
                    row[name] = when(row.get(name))
                chunk.append(row)
                if len(chunk) >= 50_000:
                    writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                    count, chunk = count + len(chunk), []
            if chunk or count == 0:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                count += len(chunk)
        return count

    return write


@cli.command()
@click.argument("name")
@click.option("--tail", type=click.IntRange(0, 1_000_000), default=None, help="only the last N lines")
@click.option("--since", type=TIME, default=None, help="from this time on: ISO 8601, or ago: 30s, 10m, 2h, 7d")
@click.option("--request-id", default=None, help="only the lines of this invocation")
@click.option("--follow", "-f", is_flag=True, help="keep printing new lines as they come, until interrupted")
@handles_errors
def logs(name: str, tail: int | None, since: str | None, request_id: str | None, follow: bool) -> None:
    """A function's log lines, oldest first (the newest ones unless --since says from when)."""
    from stoker.client import Client
    from stoker.platform.logstream import LogLine

    c = Client()

    def show(line: dict[str, Any]) -> None:
        click.echo(LogLine(int(line["timestamp"]), str(line["request_id"]), str(line["message"])).render())

    if not follow:
        for line in c.logs(name, tail=tail, since=since, request_id=request_id):
            show(line)
        return
    for line in c.follow_logs(name, tail=tail, since=since, request_id=request_id):
        show(line)
        sys.stdout.flush()
