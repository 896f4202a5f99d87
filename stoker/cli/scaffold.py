"""`stoker init NAME`: a new function folder with a manifest, a handler and a test event, and
`stoker describe NAME`: one function's settings, triggers, versions and aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from stoker.cli import cli
from stoker.cli.output import handles_errors, print_json, show_time, table

MANIFEST = '''[function]
name = "{name}"
handler = "{handler}"
runtime = "{runtime}"
memory = 128        # MB
timeout = 3         # seconds
description = "{name}: a new function (stoker init)"

# triggers: uncomment one, or see docs/http.md, docs/queues.md, docs/files.md, docs/cron.md
# [[triggers]]
# type = "http"
# route = "POST /{name}"
# public = false
'''

PYTHON = '''"""{name}: the function stoker runs. `event` is the JSON you send; `context` is Lambda's."""


def handler(event, context):
    name = (event or {{}}).get("name", "world")
    print(f"greeting {{name}} (request {{context.aws_request_id}})")  # a log line of this invocation
    return {{"message": f"Hello, {{name}}!"}}
'''

NODEJS = '''// {name}: the function stoker runs. `event` is the JSON you send; `context` is Lambda's.
exports.handler = async (event, context) => {{
  const name = (event && event.name) || "world";
  console.log(`greeting ${{name}} (request ${{context.awsRequestId}})`);
  return {{ message: `Hello, ${{name}}!` }};
}};
'''

EVENT = '{"name": "you"}\n'

RUNTIMES = {
    "python": ("handler.handler", "handler.py", PYTHON),
    "nodejs": ("index.handler", "index.js", NODEJS),
}


def scaffold(folder: Path, name: str, runtime: str) -> list[Path]:
    """Write the files of a new function; refuses a folder that already has files."""
    from stoker.errors import ConfigError
    from stoker.platform.manifest import NAME_RE

    if not NAME_RE.match(name):
        raise ConfigError(f"{name!r} is not a function name: use 1 to 64 letters, digits, '-' or '_'")
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ConfigError(f"{folder} already exists and is not empty: choose another NAME or --dir")
    handler, code_file, code = RUNTIMES[runtime]
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        folder / "stoker.toml": MANIFEST.format(name=name, handler=handler, runtime=runtime),
        folder / code_file: code.format(name=name),
        folder / "event.json": EVENT,
    }
    for path, text in files.items():
        path.write_text(text)
    return list(files)


@cli.command()
@click.argument("name")
@click.option("--runtime", type=click.Choice(sorted(RUNTIMES)), default="python", show_default=True,
              help="the language of the handler")
@click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="the folder to create (default: ./NAME)")
@handles_errors
def init(name: str, runtime: str, folder: Path | None) -> None:
    """Create a function folder: stoker.toml, a handler that answers, and event.json to try it with."""
    folder = folder or Path(name)
    scaffold(folder, name, runtime)
    click.echo(f"created {folder}/ with stoker.toml, {RUNTIMES[runtime][1]} and event.json\n"
               f"  deploy it:  stoker deploy {folder}\n"
               f"  try it:     stoker invoke {name} --data-file {folder / 'event.json'}")


@cli.command()
@click.argument("name")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@handles_errors
def describe(name: str, fmt: str) -> None:
    """One function: its settings, triggers, aliases and versions."""
    from stoker.client import Client

    data = Client().function(name)
    if fmt == "json":
        print_json(data)
    else:
        click.echo(render(data))


def render(data: dict[str, Any]) -> str:
    spec: dict[str, Any] = data.get("spec") or {}
    fields = [
        ("name", data["name"]), ("description", data.get("description") or "-"),
        ("$LATEST", f"version {data['version']} (deployed {show_time(data['deployed_at'])})"),
        ("runtime", data["runtime"]), ("handler", data["handler"]),
        ("memory", f"{data['memory']} MB"), ("timeout", f"{data['timeout']:g} s"),
        ("concurrency", data.get("concurrency") or "unreserved"),
    ]
    for key in ("retries", "keep_warm", "min_warm", "snapshot", "network", "isolation"):
        if key in spec:
            fields.append((key, spec[key]))
    if spec.get("env"):
        fields.append(("env", ", ".join(sorted(spec["env"]))))
    lines = [f"{key:>12}: {'yes' if value is True else 'no' if value is False else value}" for key, value in fields]
    triggers: list[dict[str, Any]] = spec.get("triggers") or [{"type": t} for t in data.get("triggers", [])]
    lines.append("\ntriggers:" if triggers else "\ntriggers: none")
    for i, trigger in enumerate(triggers, start=1):
        details = ", ".join(f"{k} = {v!r}" for k, v in trigger.items() if k != "type")
        lines.append(f"  #{i} {trigger['type']}" + (f": {details}" if details else ""))
    aliases = data.get("aliases") or {}
    lines.append("\naliases: " + (", ".join(f"{a} -> {v}" for a, v in sorted(aliases.items())) or "none"))
    lines.append("\nversions:")
    lines.append(table(data.get("versions") or [], ["version", "code_hash", "deployed_at", "deployed_by",
                                                   "memory", "timeout"]))
    return "\n".join(lines)
