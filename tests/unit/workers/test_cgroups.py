"""A worker's cgroup, written and read as the kernel's files (a fake tree of them here; the
real hierarchies are exercised by tests/hostile/test_bounds.py on a root node)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from stoker.workers import cgroups


def fake_v1(tmp_path: Path) -> cgroups.Hierarchy:
    bases = {c: tmp_path / c / "stoker" / "node" for c in ("memory", "cpu", "pids")}
    for base in bases.values():
        base.mkdir(parents=True)
    return cgroups.Hierarchy("v1", bases)


def test_v1_limits_follow_memory_as_on_lambda(tmp_path: Path) -> None:
    cg = fake_v1(tmp_path).make("w1", 3538, 64)
    assert cg is not None
    mem, cpu, pids = cg.dirs["memory"], cg.dirs["cpu"], cg.dirs["pids"]
    assert (mem / "memory.limit_in_bytes").read_text() == str(3538 << 20)
    assert (mem / "memory.memsw.limit_in_bytes").read_text() == str(3538 << 20)  # no swap
    assert (cpu / "cpu.shares").read_text() == "2048"  # two CPUs' worth of share
    assert int((cpu / "cpu.cfs_quota_us").read_text()) == min(2, os.cpu_count() or 1) * 100_000
    assert (pids / "pids.max").read_text() == "64"
    assert cg.join_files == [str(d / "cgroup.procs") for d in (mem, cpu, pids)]


def test_a_small_function_still_gets_a_whole_cpu_of_quota_and_a_small_share(tmp_path: Path) -> None:
    cg = fake_v1(tmp_path).make("w2", 128, 1024)
    assert cg is not None
    assert (cg.dirs["cpu"] / "cpu.shares").read_text() == str(128 * 1024 // 1769)
    assert (cg.dirs["cpu"] / "cpu.cfs_quota_us").read_text() == "100000"


def test_stragglers_are_what_joined_after_ready_and_oom_kills_are_counted(tmp_path: Path) -> None:
    cg = fake_v1(tmp_path).make("w3", 128, 1024)
    assert cg is not None
    procs = cg.dirs["memory"] / "cgroup.procs"
    oom = cg.dirs["memory"] / "memory.oom_control"
    worker = os.getpid()
    procs.write_text(f"{worker}\n")
    oom.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    cg.ready()
    assert cg.stragglers() == [] and cg.new_oom_kills() == 0
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        procs.write_text(f"{worker}\n{daemon.pid}\n")
        oom.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
        assert cg.stragglers() == [daemon.pid]
        assert daemon.wait(5) == -9
        assert cg.new_oom_kills() == 1 and cg.new_oom_kills() == 0
    finally:
        daemon.kill()


def test_the_last_readings_outlive_the_cgroup(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    cg = fake_v1(tmp_path).make("w4", 128, 1024)
    assert cg is not None
    (cg.dirs["memory"] / "memory.oom_control").write_text("oom_kill 1\n")
    (cg.dirs["memory"] / "memory.max_usage_in_bytes").write_text(str(200 << 20))
    monkeypatch.setattr(cgroups, "_remove_tree", shutil.rmtree)  # a fake tree is plain files
    cg.remove()
    assert not cg.dirs["memory"].exists()
    # a worker's exit may be handled before its last invocation's outcome is
    assert (cg.oom_kill_count(), cg.peak_kb()) == (1, 200 << 10)


def test_none_makes_no_cgroup() -> None:
    assert cgroups.Hierarchy("none", {}, "the node is not root").make("w", 128, 1) is None
    assert "rlimits" in cgroups.Hierarchy("none", {}, "the node is not root").describe()
