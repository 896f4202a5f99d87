"""One time format in every table (UTC by default, --local or STOKER_TIME=local for this machine's),
the cron table's continuation rows, and the options every client command takes."""

from __future__ import annotations

import datetime as dt
import os

import click
import pytest
from click.testing import CliRunner

from stoker.cli import LOCAL_COMMANDS, build
from stoker.cli.cron import render as render_cron
from stoker.cli.output import add_client_options, show_time, table


@pytest.fixture(autouse=True)
def no_time_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STOKER_TIME", raising=False)


def test_every_api_time_shape_shows_in_one_format() -> None:
    rows = [{"at": "2026-03-14T09:12:44.120Z"}, {"at": "2026-03-14T09:12:44+00:00"},
            {"at": "2026-03-14T10:12:44.5+01:00"}, {"at": "2026-03-14T09:12:44"}]
    lines = table(rows, ["at"]).splitlines()[1:]
    assert lines == ["2026-03-14 09:12:44Z"] * 4


def test_local_shows_this_machines_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOKER_TIME", "local")
    expected = dt.datetime(2026, 3, 14, 9, 12, 44, tzinfo=dt.UTC).astimezone().isoformat(sep=" ")
    assert show_time("2026-03-14T09:12:44Z") == expected


def test_text_that_only_looks_like_a_time_is_left_alone() -> None:
    assert table([{"x": "2026-03-14 09:12:44+02:00"}, {"x": "v2026-03-14T09:12"}], ["x"]).splitlines()[1:] == [
        "2026-03-14 09:12:44+02:00", "v2026-03-14T09:12"]


SCHEDULES = [
    {"schedule": "report/nightly", "expression": "30 2 * * *", "timezone": "Europe/Berlin", "missed": "skip",
     "last_fired": "2026-03-28T01:30:00.000Z",
     "next": ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"],
     "next_local": ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]},
    {"schedule": "tick/cron-1", "expression": "rate(2 seconds)", "timezone": "UTC", "missed": "skip",
     "last_fired": None, "next": [], "next_local": []},
]


def test_cron_continuation_rows_are_blank_and_ticks_keep_their_zone() -> None:
    lines = render_cron(SCHEDULES).splitlines()
    assert lines[0].split() == ["SCHEDULE", "EXPRESSION", "TIMEZONE", "MISSED", "LAST", "FIRED", "NEXT", "FIRE",
                                "TIMES"]
    assert lines[1].split() == ["report/nightly", "30", "2", "*", "*", "*", "Europe/Berlin", "skip",
                                "2026-03-28", "01:30:00Z", "2026-03-29", "03:00:00+02:00"]
    assert lines[2].split() == ["2026-03-30", "02:30:00+02:00"]  # nothing but the time: no "-" fillers
    assert lines[3].split() == ["2026-03-31", "02:30:00+02:00"]
    assert lines[4].split()[-2:] == ["-", "(never)"]


def test_cron_ticks_follow_utc_when_asked() -> None:
    with click.Context(click.Command("ls")) as ctx:
        ctx.meta["stoker.time_zone"] = "utc"
        lines = render_cron(SCHEDULES).splitlines()
    assert lines[1].endswith("2026-03-29 01:00:00Z") and lines[2].strip() == "2026-03-30 00:30:00Z"


def _leaves(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    out: dict[str, click.Command] = {}
    for name, command in group.commands.items():
        out[prefix + name] = command
        if isinstance(command, click.Group):
            out.update(_leaves(command, prefix + name + " "))
    return out


def test_every_client_command_takes_url_token_utc_and_local() -> None:
    commands = _leaves(build())
    clients = {name: c for name, c in commands.items() if name.split()[0] not in LOCAL_COMMANDS}
    assert {"invoke", "deploy", "functions", "ledger show", "bill", "cron ls", "logs", "alias set"} <= set(clients)
    for name, command in clients.items():
        options = {opt for p in command.params for opt in getattr(p, "opts", [])}
        assert {"--url", "--token", "--utc", "--local"} <= options, name


def test_a_flag_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, str | None] = {}

    @click.group()
    def root() -> None:
        pass

    @root.command()
    def probe() -> None:
        from stoker.settings import discover_endpoint

        endpoint = discover_endpoint()
        seen.update(url=endpoint.url, token=endpoint.token)

    add_client_options(root, set())
    monkeypatch.setenv("STOKER_URL", "http://from-env:1")
    monkeypatch.setenv("STOKER_TOKEN", "env-token")
    result = CliRunner().invoke(root, ["probe", "--url", "http://from-flag:2/", "--token", "flag-token"])
    assert result.exit_code == 0, result.output
    assert seen == {"url": "http://from-flag:2", "token": "flag-token"}
    assert os.environ["STOKER_URL"] == "http://from-flag:2/"
