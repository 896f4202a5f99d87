"""API tokens from the command line (needs the admin token)."""

from __future__ import annotations

import click

from stoker.cli import cli
from stoker.cli.output import FORMAT, handles_errors, print_json, table

RIGHTS = ("admin", "deploy", "invoke", "read")


def _rights(values: tuple[str, ...]) -> list[str]:
    rights = [r.strip() for value in values for r in value.split(",") if r.strip()]
    unknown = [r for r in rights if r not in RIGHTS]
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)}: rights are {', '.join(RIGHTS)}", param_hint="--right")
    return rights


@cli.group()
def token() -> None:
    """API tokens: create, list, revoke. A token is shown once, when it is made.

    \b
    Rights: admin (everything, including tokens), deploy (deploy, aliases, rollback,
    rm), invoke (call functions), read (functions, ledger, logs).
    """


@token.command("create")
@click.argument("name")
@click.option("--right", "rights", multiple=True, default=("invoke",), show_default=True,
              help="a right to give (repeatable, or comma-separated): admin, deploy, invoke, read")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handles_errors
def token_create(name: str, rights: tuple[str, ...], fmt: str) -> None:
    """Create a token called NAME and print it (it cannot be shown again)."""
    from stoker.client import Client

    result = Client().create_token(name, _rights(rights))
    if fmt == "json":
        print_json(result)
        return
    click.echo(result["token"])
    click.echo(f"token {result['name']} with rights {', '.join(result['rights'])}: keep it now, "
               "it is not shown again", err=True)


@token.command("list")
@click.option("--revoked", is_flag=True, help="include revoked tokens")
@FORMAT
@handles_errors
def token_list(revoked: bool, fmt: str) -> None:
    """List tokens (never their secrets)."""
    from stoker.client import Client

    rows = Client().tokens(include_revoked=revoked)
    if fmt == "json":
        print_json(rows)
        return
    click.echo(table(rows, ["name", "rights", "created_at", "created_by", "revoked_at"]))


@token.command("revoke")
@click.argument("name")
@handles_errors
def token_revoke(name: str) -> None:
    """Revoke the token called NAME: it stops working at once."""
    from stoker.client import Client

    result = Client().revoke_token(name)
    click.echo(f"revoked token {result['name']}")
