"""Named queues from the command line: enqueue, and `stoker queue ls|peek|purge|redrive`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from stoker.cli import cli
from stoker.cli.output import FORMAT, fail, handles_errors, print_json, table


def _message(data: str | None, data_file: str | None) -> bytes:
    if data is not None and data_file is not None:
        fail("give the message as an argument or with --data-file, not both")
    if data_file is not None:
        try:
            raw = sys.stdin.buffer.read() if data_file == "-" else Path(data_file).read_bytes()
        except OSError as e:
            fail(f"cannot read --data-file {data_file}: {e.strerror}")
    elif data is not None:
        raw = data.encode()
    else:
        fail("no message: give it as JSON, e.g. stoker enqueue orders '{\"order\": 42}'")
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        fail(f"the message is not valid JSON: {e}. Example: stoker enqueue orders '{{\"order\": 42}}'")
    return raw


def _attributes(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            fail(f"--attribute {pair!r} is not NAME=VALUE")
        out[name] = value
    return out


@cli.command()
@click.argument("queue")
@click.argument("message", required=False)
@click.option("--data-file", default=None, help="read the message from this file ('-' for stdin)")
@click.option("--delay", type=click.FloatRange(0, 900), default=0, show_default=True,
              help="seconds before the message becomes visible")
@click.option("--attribute", "attributes", multiple=True, metavar="NAME=VALUE", help="a message attribute (repeatable)")
@handles_errors
def enqueue(queue: str, message: str | None, data_file: str | None, delay: float, attributes: tuple[str, ...]) -> None:
    """Send MESSAGE (JSON) to QUEUE; prints its message id."""
    from stoker.client import Client

    body = _message(message, data_file)
    click.echo(Client().enqueue(queue, raw=body, delay=delay, attributes=_attributes(attributes) or None))


@cli.group()
def queue() -> None:
    """Named queues: list them, look inside, purge, redrive dead letters."""


@queue.command("ls")
@FORMAT
@handles_errors
def ls(fmt: str) -> None:
    """Every queue, with its available, in-flight and delayed messages and its consumers."""
    from stoker.client import Client

    rows = Client().queues()
    if fmt == "json":
        print_json(rows)
        return
    click.echo(table(rows, ["name", "available", "in_flight", "delayed", "consumers"]))


@queue.command()
@click.argument("queue")
@click.option("--limit", type=click.IntRange(1, 1000), default=10, show_default=True)
@FORMAT
@handles_errors
def peek(queue: str, limit: int, fmt: str) -> None:
    """The oldest messages of QUEUE, without receiving them."""
    from stoker.client import Client

    rows = Client().peek(queue, limit)
    if fmt == "json":
        print_json(rows)
        return
    shown = [{**r, "body": orjson.dumps(r["body"]).decode()} for r in rows]
    click.echo(table(shown, ["id", "state", "receive_count", "sent_at", "body"]))


@queue.command()
@click.argument("queue")
@handles_errors
def purge(queue: str) -> None:
    """Delete every message of QUEUE (in flight and delayed ones too)."""
    from stoker.client import Client

    n = Client().purge(queue)
    click.echo(f"purged {n} message{'s' if n != 1 else ''} from {queue}")


@queue.command()
@click.argument("queue")
@click.option("--to", default=None, help="move to this queue instead of each message's source queue")
@click.option("--max", "limit", type=click.IntRange(1, 10_000_000), default=None, help="move at most this many")
@FORMAT
@handles_errors
def redrive(queue: str, to: str | None, limit: int | None, fmt: str) -> None:
    """Move messages of QUEUE (usually a dead-letter queue, NAME-dlq) back to where they came from."""
    from stoker.client import Client

    result = Client().redrive(queue, to=to, limit=limit)
    if fmt == "json":
        print_json(result)
        return
    click.echo(f"moved {result['moved']} message{'s' if result['moved'] != 1 else ''} from {queue}"
               + (f" to {to}" if to else ""))
    if result["skipped_in_flight"]:
        click.echo(f"left {result['skipped_in_flight']} in flight (being consumed); redrive again later")
    if result["skipped_no_source"]:
        click.echo(f"left {result['skipped_no_source']} with no source queue: give --to QUEUE")
