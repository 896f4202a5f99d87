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
]


def main() -> None:
    import importlib

    for name in COMMAND_MODULES:
        importlib.import_module(name)
    cli(prog_name="stoker")
