"""Arrivals: a file is whole once its size and modification time held still for the settle time."""

from __future__ import annotations

import os
import time
from pathlib import Path

from stoker.triggers.files.arrivals import Arrivals


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_file_settles_only_after_it_stops_changing(tmp_path: Path) -> None:
    clock = Clock()
    arrivals = Arrivals(settle=2.0, clock=clock)
    path = tmp_path / "a.csv"
    path.write_text("x")
    arrivals.changed(str(path))
    clock.now += 1.5
    assert arrivals.settled() == []
    with path.open("a") as f:  # the writer adds more: the settle time starts again
        f.write("more")
    clock.now += 1.0
    assert arrivals.settled() == []
    clock.now += 1.9
    assert arrivals.settled() == []
    clock.now += 0.2
    assert arrivals.settled() == [str(path)]
    assert arrivals.settled() == []  # once


def test_a_file_that_disappears_is_dropped(tmp_path: Path) -> None:
    clock = Clock()
    arrivals = Arrivals(settle=1.0, clock=clock)
    path = tmp_path / "a.csv"
    path.write_text("x")
    arrivals.changed(str(path))
    path.unlink()
    clock.now += 5
    assert arrivals.settled() == [] and arrivals.pending == {}


def test_a_scanned_file_with_an_old_mtime_is_still_watched_a_moment(tmp_path: Path) -> None:
    clock = Clock()
    arrivals = Arrivals(settle=2.0, clock=clock)
    path = tmp_path / "old.csv"
    path.write_text("x")
    old = time.time() - 3600
    os.utime(path, (old, old))
    arrivals.settling_since(str(path), os.stat(path).st_mtime_ns)
    assert arrivals.settled() == []
    clock.now += 0.5
    assert arrivals.settled() == [str(path)]
    fresh = tmp_path / "fresh.csv"
    fresh.write_text("y")
    arrivals.settling_since(str(fresh), os.stat(fresh).st_mtime_ns)
    clock.now += 0.5
    assert arrivals.settled() == []  # written just now: the whole settle time applies
    clock.now += 1.6
    assert arrivals.settled() == [str(fresh)]
