"""The `stoker` command. Each module here adds one group of subcommands."""

from __future__ import annotations

import click

from stoker import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="stoker")
def cli() -> None:
    """stoker: the AWS Lambda model on your own machines.

    Start everything with `stoker up`, deploy with `stoker deploy FOLDER`, call with
    `stoker invoke NAME`, and ask the ledger with `stoker ledger`.
    """


#: the modules that register subcommands on `cli`, in help order
COMMAND_MODULES = [
    "stoker.cli.roles",
    "stoker.cli.db",
    "stoker.cli.functions",
    "stoker.cli.ledger",
    "stoker.cli.dlq",
    "stoker.cli.cron",
    "stoker.cli.queues",
    "stoker.cli.bridges",
    "stoker.cli.versions",
    "stoker.cli.tokens",
    "stoker.cli.bill",
    "stoker.cli.scaffold",
]


#: commands that do not talk to a running platform through its gateway: the roles themselves, `db`
#: (whose --url is a database's), `bridge` (it reaches Redis) and `init` (it writes files)
LOCAL_COMMANDS = {"up", "gateway", "scheduler", "node", "ledger-writer", "triggers", "db", "bridge", "init"}


def build() -> click.Group:
    """The whole command: every module's subcommands, and --url/--token/--utc/--local on each client command."""
    import importlib

    from stoker.cli.output import add_client_options

    if not getattr(cli, "_built", False):
        for name in COMMAND_MODULES:
            importlib.import_module(name)
        add_client_options(cli, LOCAL_COMMANDS)
        cli._built = True  # type: ignore[attr-defined]
    return cli


def main() -> None:
    build()(prog_name="stoker")
