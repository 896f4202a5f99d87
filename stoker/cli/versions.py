"""Versions, aliases, rollback and deletion from the command line."""

from __future__ import annotations

import sys

import click

from stoker.cli import cli
from stoker.cli.output import FORMAT, handles_errors, print_json, table


def _weights(values: tuple[str, ...]) -> dict[str, float]:
    out: dict[str, float] = {}
    for raw in values:
        version, sep, share = raw.partition("=")
        try:
            if not sep or not version.strip().isdigit():
                raise ValueError
            out[version.strip()] = float(share)
        except ValueError:
            raise click.BadParameter(f"{raw!r}: write VERSION=SHARE, e.g. --weight 4=0.1 for 10% to version 4",
                                     param_hint="--weight") from None
    return out


def _weights_text(weights: dict[str, float]) -> str:
    return ", ".join(f"{v}: {w:.0%}" for v, w in sorted(weights.items())) or "-"


@cli.command()
@click.argument("name")
@FORMAT
@handles_errors
def versions(name: str, fmt: str) -> None:
    """List a function's versions (newest last; $LATEST is the newest)."""
    from stoker.client import Client

    rows = Client().versions(name)
    if fmt == "json":
        print_json(rows)
        return
    for row in rows:
        row["latest"] = "$LATEST" if row["latest"] else ""
        row["code_hash"] = row["code_hash"][:12]
    click.echo(table(rows, ["version", "latest", "aliases", "code_hash", "deployed_at", "deployed_by", "handler",
                            "memory", "timeout"]))


@cli.group()
def alias() -> None:
    """Aliases: names for versions, with optional weighted routing to a second version."""


@alias.command("set")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@click.argument("version")
@click.option("--weight", "weights", multiple=True, metavar="VERSION=SHARE",
              help="route this share of invocations to another version, e.g. --weight 4=0.1 (repeatable); "
                   "without it any earlier weights are cleared")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handles_errors
def alias_set(name: str, alias_name: str, version: str, weights: tuple[str, ...], fmt: str) -> None:
    """Create ALIAS of function NAME, or move it, to VERSION."""
    from stoker.client import Client

    result = Client().set_alias(name, alias_name, version, _weights(weights))
    if fmt == "json":
        print_json(result)
    else:
        click.echo(result["message"])


@alias.command("ls")
@click.argument("name")
@FORMAT
@handles_errors
def alias_ls(name: str, fmt: str) -> None:
    """List a function's aliases, with where each pointed before its last change."""
    from stoker.client import Client

    rows = Client().aliases(name)
    if fmt == "json":
        print_json(rows)
        return
    for row in rows:
        row["weights"] = _weights_text(row["weights"])
        previous = row.get("previous")
        row["previous"] = f"{previous['version']}" if previous else None
    click.echo(table(rows, ["alias", "version", "weights", "previous", "updated_at"]))


@alias.command("rm")
@click.argument("name")
@click.argument("alias_name", metavar="ALIAS")
@handles_errors
def alias_rm(name: str, alias_name: str) -> None:
    """Delete ALIAS of function NAME."""
    from stoker.client import Client

    click.echo(Client().delete_alias(name, alias_name)["message"])


@cli.command()
@click.argument("name")
@click.option("--alias", "alias_name", default=None,
              help="the alias to move back (without it: $LATEST, by making a new version of the older code)")
@click.option("--to", "to", type=click.IntRange(1), default=None,
              help="this version instead of the state before the last change")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handles_errors
def rollback(name: str, alias_name: str | None, to: int | None, fmt: str) -> None:
    """Put an alias (or $LATEST) back where it was before its last change, in one step.

    Invocations already running finish on the version they started with. Rolling back
    twice returns to where you started.
    """
    from stoker.client import Client

    result = Client().rollback(name, alias_name, to)
    if fmt == "json":
        print_json(result)
    else:
        click.echo(result["message"])


@cli.command("rm")
@click.argument("name")
@click.option("--version", "version", type=click.IntRange(1), default=None,
              help="delete only this version (refused while an alias points at it)")
@click.option("--yes", "-y", is_flag=True, help="do not ask before deleting a whole function")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handles_errors
def rm(name: str, version: int | None, yes: bool, fmt: str) -> None:
    """Delete a function (versions, aliases, triggers), or one of its versions.

    Bundles that no version uses any more are removed from the bundle store. Deleting a
    whole function asks first when run from a terminal (--yes skips the question).
    """
    from stoker.client import Client

    if version is None and not yes and sys.stdin.isatty():
        click.confirm(f"delete {name} with all its versions, aliases and triggers?", abort=True)
    result = Client().delete(name, version)
    if fmt == "json":
        print_json(result)
    else:
        click.echo(result["message"])
