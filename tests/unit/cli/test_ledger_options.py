"""Bad option values of `stoker ledger`, `stoker bill` and `stoker logs` are refused before
anything is sent: exit code 2, and a message naming the option and the accepted forms."""

from __future__ import annotations

import importlib

import pytest
from click.testing import CliRunner

from stoker.cli import COMMAND_MODULES, cli

for module in COMMAND_MODULES:
    importlib.import_module(module)


@pytest.mark.parametrize(("args", "option", "hint"), [
    (["ledger", "--since", "yesterday-ish"], "--since", "ISO 8601"),
    (["ledger", "--until", "soon"], "--until", "10m"),
    (["ledger", "--limit", "0"], "--limit", "1<=x<=100000"),
    (["ledger", "--limit", "many"], "--limit", "not a valid integer"),
    (["ledger", "--status", "done"], "--status", "succeeded"),
    (["ledger", "--version", "latest"], "--version", "1, 2"),
    (["ledger", "--format", "xml"], "--format", "csv"),
    (["ledger", "show", "x", "--format", "csv"], "--format", "json"),
    (["ledger", "prune", "--older-than", "a while"], "--older-than", "30s, 10m"),
    (["ledger", "prune"], "--older-than", ""),
    (["ledger", "export", "--since", "then"], "--since", "ISO 8601"),
    (["ledger", "export", "--format", "xlsx"], "--format", "parquet"),
    (["ledger", "export", "--format", "parquet"], "--output", ""),
    (["bill", "--by", "week"], "--by", "function"),
    (["bill", "--since", "last tuesday"], "--since", "ISO 8601"),
    (["bill", "--month", "2026-13"], "--month", "YYYY-MM"),
    (["bill", "--month", "2026-01", "--since", "1d"], "--month", "--since"),
    (["bill", "--format", "csv"], "--format", "json"),
    (["logs", "fn", "--since", "whenever"], "--since", "ISO 8601"),
    (["logs", "fn", "--tail", "-3"], "--tail", ""),
])
def test_bad_option_values_name_the_option(args: list[str], option: str, hint: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # no platform anywhere: an option error must come before any attempt to reach one
    monkeypatch.setenv("STOKER_URL", "http://127.0.0.1:9")
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert option in result.output and hint in result.output
