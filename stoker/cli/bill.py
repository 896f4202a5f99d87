"""`stoker bill`: what the ledger's invocations cost, at Lambda's prices or yours."""

from __future__ import annotations

from typing import Any

import click

from stoker.cli import cli
from stoker.cli.ledger import TIME
from stoker.cli.output import handles_errors, print_json, show_time, table

#: decimal places of amounts under a cent: one 1 ms call at 128 MB costs $0.0000000021 at list price
SMALL_DECIMALS = 10


def money(value: float) -> str:
    """Cents for amounts a person pays; every digit down to SMALL_DECIMALS places for the tiny amounts of
    light use (never "$0." for an amount that is not zero)."""
    if value == 0:
        return "$0.00"
    sign = "-" if value < 0 else ""
    amount = abs(value)
    if amount >= 0.01:
        return f"{sign}${amount:,.2f}"
    digits = f"{amount:.{SMALL_DECIMALS}f}".rstrip("0")
    if digits.endswith("."):  # not zero, but under the last place shown
        return f"{sign}<${1 / 10 ** SMALL_DECIMALS:.{SMALL_DECIMALS}f}"
    return f"{sign}${digits}"


@cli.command()
@click.option("--since", type=TIME, default=None, help="from this time: ISO 8601, or ago: 2h, 7d (default: "
              "the start of this month, UTC)")
@click.option("--until", type=TIME, default=None, help="up to this time (default: now)")
@click.option("--month", default=None, metavar="YYYY-MM", help="one calendar month, instead of --since/--until")
@click.option("--by", type=click.Choice(["function", "day"]), default="function", show_default=True,
              help="one line per function, or per day")
@click.option("--no-free-tier", "no_free_tier", is_flag=True, help="bill everything at list price")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="table for people (rounded), json for scripts (unrounded)")
@handles_errors
def bill(since: str | None, until: str | None, month: str | None, by: str, no_free_tier: bool, fmt: str) -> None:
    """Requests, GB-seconds and cost, per function (or day), with the monthly free tier.

    Every try that ran is billed (succeeded, failed or timed out; not throttled): requests
    at $0.20 per million and memory/1024 x billed ms/1000 GB-seconds at $0.0000166667,
    unless STOKER_PRICE_* say otherwise. See docs/ledger.md.
    """
    from stoker.client import Client

    if month is not None:
        if since is not None or until is not None:
            raise click.UsageError("--month cannot go with --since or --until: give one or the other")
        from stoker.errors import InvalidInput
        from stoker.platform.ledger.billing import parse_month

        try:
            parse_month(month)
        except InvalidInput:
            raise click.BadParameter(f"{month!r} is not a month: use YYYY-MM, e.g. 2026-01",
                                     param_hint="'--month'") from None
    result = Client().bill(since=since, until=until, month=month, by=by, free_tier=not no_free_tier)
    if fmt == "json":
        print_json(result)
    else:
        click.echo(render(result))


def render(result: dict[str, Any]) -> str:
    key = "function" if result["by"] == "function" else "day"
    lines = result["functions"] if key == "function" else result["days"]
    rows = [{key: line[key], "requests": f"{line['requests']:,}", "gb_seconds": f"{line['gb_seconds']:,.3f}",
             "request_cost": money(line["request_cost"]), "compute_cost": money(line["compute_cost"]),
             "cost": money(line["cost"])} for line in lines]
    out = [f"bill from {show_time(result['since'])} to {show_time(result['until'])}", ""]
    out.append(table(rows, [key, "requests", "gb_seconds", "request_cost", "compute_cost", "cost"],
                     [key.upper(), "REQUESTS", "GB-SECONDS", "REQUESTS COST", "COMPUTE COST", "COST"]))
    out.append("")
    out.append(f"subtotal: {money(result['subtotal'])}  ({result['requests']:,} requests, "
               f"{result['gb_seconds']:,.3f} GB-seconds)")
    free = result["free_tier"]
    if free["applied"]:
        out.append(f"free tier: -{money(free['credit'])}  ({free['requests']:,.0f} requests and "
                   f"{free['gb_seconds']:,.3f} GB-seconds of the {free['requests_per_month']:,.0f} requests and "
                   f"{free['gb_seconds_per_month']:,.0f} GB-seconds free each month)")
    else:
        out.append("free tier: not applied (--no-free-tier)")
    out.append(f"total: {money(result['total_cost'])}")
    return "\n".join(out)
