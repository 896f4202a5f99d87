"""The files trigger's table: paths resolved against the deploy's folder, actions, and which files count."""

from __future__ import annotations

from pathlib import Path

import pytest

from stoker.errors import ConfigError
from stoker.platform.manifest import parse_manifest
from stoker.triggers.files.config import FilesConfig, validate


def config(**table: object) -> FilesConfig:
    return FilesConfig.from_trigger("fn", validate({"path": "/data/inbox", **table}, None))


def test_relative_paths_resolve_against_the_folder_deployed_from(tmp_path: Path) -> None:
    out = validate({"path": "inbox", "on_success": "move:done", "on_failure": "move:../failed"}, str(tmp_path))
    assert out == {"path": str(tmp_path / "inbox"), "pattern": ["*"], "recursive": False, "poll": False,
                   "on_success": f"move:{tmp_path / 'done'}", "on_failure": f"move:{tmp_path.parent / 'failed'}",
                   "settle": 2.0}


def test_a_relative_path_without_a_folder_is_refused_with_what_to_do() -> None:
    manifest = '[function]\nname = "x"\n[[triggers]]\ntype = "files"\npath = "inbox"\n'
    with pytest.raises(ConfigError) as e:
        parse_manifest(manifest)
    assert "trigger #1 (files)" in e.value.message and '"inbox" is relative' in e.value.message
    assert "stoker deploy FOLDER" in e.value.message
    assert parse_manifest(manifest, "/srv/fn").triggers[0]["path"] == "/srv/fn/inbox"


@pytest.mark.parametrize("table,fragment", [
    ({}, "no path"),
    ({"path": "/"}, "whole file system"),
    ({"path": "/in", "patern": "*.csv"}, "unknown key 'patern'"),
    ({"path": "/in", "pattern": 3}, "pattern = 3"),
    ({"path": "/in", "pattern": []}, "pattern = []"),
    ({"path": "/in", "recursive": "yes"}, "recursive = 'yes'"),
    ({"path": "/in", "on_success": "archive"}, "on_success = 'archive' is not valid: use keep, delete, or move:"),
    ({"path": "/in", "on_failure": "move:"}, "on_failure = 'move:'"),
    ({"path": "/in", "on_success": "move:/in"}, "into the folder they came from"),
    ({"path": "/in", "settle": 0}, "settle = 0"),
])
def test_bad_tables_are_refused_naming_the_key(table: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as e:
        validate(table, None)
    assert fragment in e.value.message


def test_the_platforms_own_data_directory_cannot_be_watched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOKER_HOME", str(tmp_path / "home"))
    with pytest.raises(ConfigError) as e:
        validate({"path": str(tmp_path / "home" / "bundles")}, None)
    assert "stoker's own data directory" in e.value.message


def test_patterns_match_names_and_hidden_or_temporary_files_need_naming() -> None:
    c = config(pattern="*.csv")
    assert c.wants("a.csv") and not c.wants("a.txt")
    for name in (".a.csv", "a.csv.tmp", "a.csv.part", "a.csv~"):
        assert not config(pattern="*").wants(name), name
    assert config(pattern="*.part").wants("a.part")
    assert config(pattern=".*").wants(".hidden")
    assert config(pattern="*~").wants("notes~")
    assert not config(pattern="*.part").wants(".a.part")  # hidden: the pattern names .part, not dot files
    both = config(pattern=["*.csv", "*.json"])
    assert both.wants("x.json") and both.wants("x.csv") and not both.wants("x.xml")


def test_which_paths_below_the_folder_count() -> None:
    flat = config()
    assert flat.relative("/data/inbox/a.csv") == "a.csv"
    assert flat.relative("/data/inbox/sub/a.csv") is None  # not recursive
    assert flat.relative("/data/other/a.csv") is None
    deep = config(recursive=True, on_success="move:/data/inbox/done", pattern="2024/*.csv")
    assert deep.relative("/data/inbox/sub/a.csv") == "sub/a.csv"
    assert deep.relative("/data/inbox/.git/a.csv") is None  # hidden folder
    assert deep.relative("/data/inbox/done/a.csv") is None  # where processed files go
    assert deep.wants("2024/a.csv") and not deep.wants("2023/a.csv")
    assert deep.bucket == "inbox"


def test_data_folders_inside_the_function_folder_are_not_bundled(tmp_path: Path) -> None:
    import io
    import zipfile

    from stoker.platform.registry.deploy import read_deployable

    fn = tmp_path / "fn"
    for sub in ("inbox", "done", "lib"):
        (fn / sub).mkdir(parents=True)
        (fn / sub / "x.csv").write_text(sub)
    (fn / "handler.py").write_text("def handler(e, c):\n    return 1\n")
    (fn / "stoker.toml").write_text('[function]\nname = "fn"\n[[triggers]]\ntype = "files"\npath = "inbox"\n'
                                    f'on_success = "move:done"\non_failure = "move:{tmp_path / "failed"}"\n')
    names = zipfile.ZipFile(io.BytesIO(read_deployable(fn))).namelist()
    assert sorted(names) == ["handler.py", "lib/x.csv", "stoker.toml"]
    before = read_deployable(fn)
    (fn / "inbox" / "more.csv").write_text("new data")
    assert read_deployable(fn) == before  # dropped files never change the code
