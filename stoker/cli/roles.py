"""Running the platform: `stoker up`, and the separate roles of a cluster."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import click

from stoker.cli import cli
from stoker.cli.output import handles_errors
from stoker.settings import Settings


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8700, show_default=True,
              help="gateway port (0 picks a free one)")
@click.option("--host", default="127.0.0.1", show_default=True, help="address the gateway listens on")
@click.option("--deploy", "deploy", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="deploy this function folder or zip before reporting healthy (repeatable)")
@click.option("--slots", type=click.IntRange(1, 10_000), default=None, help="worker processes on the node")
@handles_errors
def up(port: int, host: str, deploy: tuple[Path, ...], slots: int | None) -> None:
    """Run the whole platform here: embedded Redis, ledger, scheduler, a node, the gateway."""
    from stoker.supervisor import up as run_up

    sys.exit(run_up(host=host, port=port, deploy=list(deploy), node_slots=slots))


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8700, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--fd", type=int, default=None, hidden=True, help="serve on this already bound socket")
@click.option("--advertise-url", default=None, help="the URL nodes use to reach this gateway")
@handles_errors
def gateway(port: int, host: str, fd: int | None, advertise_url: str | None) -> None:
    """Serve the API (STOKER_REDIS_URL, STOKER_DB_URL, STOKER_TOKEN)."""
    from stoker import roles
    from stoker.platform.gateway.server import bind

    settings = Settings.from_env()
    settings.require_redis_url()
    sock = socket.socket(fileno=fd) if fd is not None else bind(host, port)
    if advertise_url is None:
        bound_host, bound_port = sock.getsockname()[:2]
        shown = socket.gethostname() if bound_host in ("0.0.0.0", "::") else bound_host
        advertise_url = f"http://{shown}:{bound_port}"
    click.echo(f"gateway listening on {advertise_url}", err=True)
    roles.run("gateway", lambda stop: roles.gateway(settings, sock, advertise_url, stop))


@cli.command()
@click.option("--ledger/--no-ledger", default=True, show_default=True, help="also run a ledger writer")
@click.option("--triggers/--no-triggers", default=True, show_default=True, help="also run the trigger sources")
@handles_errors
def scheduler(ledger: bool, triggers: bool) -> None:
    """Place events on nodes; retries, dead nodes, held-back events (any number may run)."""
    from stoker import roles

    settings = Settings.from_env()
    settings.require_redis_url()
    roles.run("scheduler", lambda stop: roles.scheduler(settings, stop, ledger, triggers))


@cli.command()
@click.option("--name", default=None, help="the node's name in the ledger (default: the host name)")
@click.option("--slots", type=click.IntRange(1, 10_000), default=None,
              help="worker processes this node keeps (busy or warm)")
@handles_errors
def node(name: str | None, slots: int | None) -> None:
    """Run functions on this machine (a node agent with its warm workers)."""
    from stoker import roles

    settings = Settings.from_env()
    settings.require_redis_url()
    roles.run("node", lambda stop: roles.node(settings, stop, name, slots))


@cli.command("ledger-writer")
@handles_errors
def ledger_writer() -> None:
    """Write ledger records from the bus to SQL (any number may run)."""
    from stoker import roles

    settings = Settings.from_env()
    settings.require_redis_url()
    roles.run("ledger", lambda stop: roles.ledger_writer(settings, stop))


@cli.command("triggers")
@handles_errors
def triggers_role() -> None:
    """Run the trigger sources (queues, files, cron, database changes)."""
    from stoker import roles

    settings = Settings.from_env()
    settings.require_redis_url()
    roles.run("triggers", lambda stop: roles.triggers(settings, stop))
