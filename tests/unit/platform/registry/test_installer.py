"""The deploy-time installer runner: output line by line as it comes, kept for errors, a deadline."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from stoker.platform.registry.installer import run_installer


def test_lines_reach_progress_as_they_are_printed(tmp_path: Path) -> None:
    seen: list[tuple[float, str]] = []
    started = time.monotonic()
    result = run_installer(["sh", "-c", "echo Collecting a; sleep 1; echo >&2 warning b; echo; echo done"],
                           env=dict(os.environ), timeout=30,
                           progress=lambda line: seen.append((time.monotonic() - started, line)))
    assert result.returncode == 0 and not result.timed_out
    assert [line for _, line in seen] == result.output == ["Collecting a", "warning b", "done"]
    assert seen[0][0] < 0.9 <= seen[1][0]  # the first line came before the installer finished


def test_the_deadline_kills_it_and_says_so(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_installer(["sh", "-c", "echo started; exec sleep 30"], env=dict(os.environ), timeout=0.5)
    assert result.timed_out and result.returncode != 0
    assert result.output == ["started"] and time.monotonic() - started < 10
    assert result.tail(1) == ["started"]


def test_a_missing_program_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        run_installer([str(tmp_path / "no-such-installer")], env={}, timeout=5)
