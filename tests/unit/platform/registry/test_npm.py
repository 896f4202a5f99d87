"""Deploy-time npm: when it runs, which command, and bundles that npm has touched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stoker.errors import BundleError
from stoker.platform.registry.bundles import inspect_bundle, pack_directory
from stoker.platform.registry.npm import lists_dependencies, npm_command


def test_npm_runs_only_for_listed_dependencies(tmp_path: Path) -> None:
    assert not lists_dependencies(tmp_path)
    (tmp_path / "package.json").write_text('{"name": "x", "devDependencies": {"jest": "1"}}')
    assert not lists_dependencies(tmp_path)
    (tmp_path / "package.json").write_text('{"name": "x", "dependencies": {"ms": "^2.1.3"}}')
    assert lists_dependencies(tmp_path)
    (tmp_path / "package.json").write_text('{"name": ')
    with pytest.raises(BundleError, match=r"package\.json is not valid JSON"):
        lists_dependencies(tmp_path)


def test_a_lock_file_means_npm_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STOKER_NPM", "/opt/npm")
    assert npm_command(tmp_path)[:3] == ["/opt/npm", "install", "--omit=dev"]
    (tmp_path / "package-lock.json").write_text("{}")
    command = npm_command(tmp_path)
    assert command[:3] == ["/opt/npm", "ci", "--omit=dev"] and "--no-bin-links" in command


def test_without_npm_the_error_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STOKER_NPM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BundleError, match="npm is not installed"):
        npm_command(tmp_path)


def test_npm_command_links_are_left_out_of_a_bundle_but_other_links_are_refused(tmp_path: Path) -> None:
    (tmp_path / "stoker.toml").write_text('[function]\nname = "n"\nruntime = "nodejs"\n')
    (tmp_path / "index.js").write_text("exports.handler = async () => 1;\n")
    package = tmp_path / "node_modules" / "ms"
    package.mkdir(parents=True)
    (package / "index.js").write_text("module.exports = 1;\n")
    (tmp_path / "node_modules" / ".bin").mkdir()
    os.symlink("../ms/index.js", tmp_path / "node_modules" / ".bin" / "ms")
    info = inspect_bundle(pack_directory(tmp_path))
    assert "node_modules/ms/index.js" in info.files and "node_modules/.bin/ms" not in info.files
    os.symlink("index.js", tmp_path / "alias.js")
    with pytest.raises(BundleError, match="symbolic link"):
        pack_directory(tmp_path)
