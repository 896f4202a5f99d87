"""Functions from the command line: deploy, list, invoke."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from stoker.cli import cli
from stoker.cli.output import FORMAT, fail, handles_errors, print_json, table


def client() -> object:
    from stoker.client import Client

    return Client()


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handles_errors
def deploy(path: Path, fmt: str) -> None:
    """Deploy a function folder (with stoker.toml) or a zip of one."""
    from stoker.cli.progress import Progress
    from stoker.client import Client
    from stoker.platform.registry.deploy import read_deployable, source_folder

    data = read_deployable(path)  # checks the folder before anything is sent
    client = Client()
    installs = [f for f in ("requirements.txt", "package.json") if (path / f).is_file()] if path.is_dir() else []
    label = f"deploying {path} ({len(data) / 1024:,.0f} KB" + (
        f"; the platform installs {' and '.join(installs)}, which can take minutes)" if installs else ")")
    try:
        with Progress(label, announce=bool(installs)) as shown:
            # relative paths in [[triggers]] resolve against the folder deployed from; the installer's
            # output (pip's) is shown as the platform runs it
            result = client.deploy(data, source_dir=source_folder(path), progress=shown.line)
    except KeyboardInterrupt:
        fail("deploy interrupted: the platform may still finish it; `stoker functions` (or `stoker versions "
             "NAME`) shows whether a new version was made, and deploying again is safe", code=130)
    if fmt == "json":
        print_json(result)
    else:
        click.echo(result.get("message") or f"deployed {result['function']} version {result['version']}")


@cli.command()
@FORMAT
@handles_errors
def functions(fmt: str) -> None:
    """List deployed functions with their newest version."""
    from stoker.client import Client

    rows = Client().functions()
    if fmt == "json":
        print_json(rows)
        return
    click.echo(table(rows, ["name", "version", "runtime", "handler", "memory", "timeout", "triggers", "deployed_at"]))


def _payload(data: str | None, data_file: str | None) -> bytes:
    if data is not None and data_file is not None:
        fail("give --data or --data-file, not both")
    if data_file is not None:
        try:
            raw = sys.stdin.buffer.read() if data_file == "-" else Path(data_file).read_bytes()
        except OSError as e:
            fail(f"cannot read --data-file {data_file}: {e.strerror}")
        source = "--data-file"
    else:
        raw = (data if data is not None else "{}").encode()
        source = "--data"
    if not raw.strip():
        return b"{}"
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        fail(f"{source} is not valid JSON: {e}. Example: --data '{{\"name\": \"world\"}}'")
    return raw


@cli.command()
@click.argument("name")
@click.option("--data", default=None, help="the event, as JSON (default {})")
@click.option("--data-file", default=None, help="read the event from this file ('-' for stdin)")
@click.option("--async", "is_async", is_flag=True, help="queue the event and print its invocation id")
@click.option("--qualifier", default=None, help="a version number, an alias, or $LATEST")
@handles_errors
def invoke(name: str, data: str | None, data_file: str | None, is_async: bool, qualifier: str | None) -> None:
    """Invoke a function. Prints its result (exit 0) or its error (exit 1)."""
    from stoker.client import Client

    payload = _payload(data, data_file)
    c = Client()
    if is_async:
        click.echo(c.invoke_async(name, raw=payload, qualifier=qualifier))
        return
    result = c.invoke_result(name, qualifier=qualifier, raw=payload)
    click.echo(result.body.decode("utf-8", "replace"))
    if not result.ok:
        sys.exit(1)
