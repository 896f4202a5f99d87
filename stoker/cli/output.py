"""How the CLI prints: tables for people, JSON and CSV for scripts, errors on stderr.

Exit codes: 0 success, 1 the function failed, 2 bad input or a platform error.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import io
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import click
import orjson

from stoker.errors import StokerError

F = TypeVar("F", bound=Callable[..., Any])

FORMAT = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
                      help="table for people, json for scripts")


class DefaultCommandGroup(click.Group):
    """A group whose bare form runs a default subcommand: `stoker dlq NAME` is `stoker dlq list NAME`."""

    default_command = "list"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] not in ("-h", "--help")):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handles_errors(fn: F) -> F:
    """Turn stoker's errors into a message on stderr and exit code 2; a missing optional package
    into the extra that installs it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StokerError as e:
            fail(e.message)
        except ModuleNotFoundError as e:
            from stoker.extras import missing_extra_message

            advice = missing_extra_message(e)
            if advice is None:
                raise
            fail(advice)
        except KeyboardInterrupt:
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2 if sys.stdout.isatty() else 0).decode())


# -- one time format in every table ---------------------------------------------------------

#: an ISO 8601 time as the API sends it (with T; fraction and offset optional, no offset means UTC); a time
#: already shown (with a space) is left alone
_ISO_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?$")

_ZONE_KEY = "stoker.time_zone"


def chosen_time_zone() -> str | None:
    """"utc" or "local" when the user chose (--utc / --local, else STOKER_TIME), else None."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(_ZONE_KEY):
        return str(ctx.meta[_ZONE_KEY])
    env = os.environ.get("STOKER_TIME", "").lower()
    return env if env in ("utc", "local") else None


def time_zone() -> str:
    """"utc" or "local": how this command shows times (UTC unless chosen otherwise)."""
    return chosen_time_zone() or "utc"


def is_time(value: Any) -> bool:
    return isinstance(value, str) and bool(_ISO_TIME.match(value))


def show_time(value: str | dt.datetime, keep_offset: bool = False) -> str:
    """Every time a person reads: `2026-03-14 09:12:44Z` (--utc, the default) or with this machine's
    offset, `2026-03-14 10:12:44+01:00` (--local). JSON output keeps the API's ISO 8601.

    keep_offset: a time whose own zone means something (a cron tick in its schedule's zone) keeps it,
    in the same layout, unless --utc or --local was chosen."""
    when = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if keep_offset and chosen_time_zone() is None:
        text = when.isoformat(sep=" ", timespec="seconds")
        return text[: -len("+00:00")] + "Z" if text.endswith("+00:00") else text
    if time_zone() == "local":
        return when.astimezone().isoformat(sep=" ", timespec="seconds")
    return when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "-"
    if is_time(value):
        return show_time(value)
    text = str(value).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def table(rows: Iterable[dict[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    rows = list(rows)
    headers = list(headers or [c.upper() for c in columns])
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(h), *(len(row[i]) for row in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def to_csv(rows: Iterable[dict[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


# -- options every command that talks to a platform takes -----------------------------------

def _set_env(name: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(_ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        if value:
            os.environ[name] = str(value)  # read by discover_endpoint(), as if exported
        return value

    return callback


def _set_zone(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value:
        ctx.meta[_ZONE_KEY] = value  # meta is shared by every context of this invocation
    return value


def client_options() -> list[click.Parameter]:
    """--url/--token beside STOKER_URL/STOKER_TOKEN (a flag wins), and --utc/--local for times."""
    return [
        click.Option(["--url"], expose_value=False, callback=_set_env("STOKER_URL"), metavar="URL",
                     help="the platform's gateway, e.g. http://host:8700 (default: STOKER_URL, else "
                          "STOKER_HOME/endpoint.json)"),
        click.Option(["--token"], expose_value=False, callback=_set_env("STOKER_TOKEN"), metavar="TOKEN",
                     help="the bearer token to send (default: STOKER_TOKEN, else endpoint.json's)"),
        click.Option(["--utc", "zone"], flag_value="utc", expose_value=False, callback=_set_zone,
                     help="show times in UTC, as 2026-03-14 09:12:44Z (the default; STOKER_TIME=local changes it)"),
        click.Option(["--local", "zone"], flag_value="local", expose_value=False, callback=_set_zone,
                     help="show times in this machine's time zone, with its offset"),
    ]


def add_client_options(group: click.Group, local: set[str]) -> None:
    """Give every command of `group` (and its groups' commands) the client options, except the commands
    named in `local`, which do not talk to a running platform (or already use --url for a database)."""
    for name, command in group.commands.items():
        if name in local:
            continue
        taken = {opt for param in command.params for opt in getattr(param, "opts", [])}
        if not taken & {"--url", "--token", "--utc", "--local"}:
            command.params.extend(client_options())
        if isinstance(command, click.Group):
            add_client_options(command, set())
