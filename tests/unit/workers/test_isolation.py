"""The node's isolation policy and the namespace view's layout, without starting workers."""

from __future__ import annotations

from pathlib import Path

import pytest

from stoker.errors import ConfigError
from stoker.workers import mountview
from stoker.workers.isolation import IsolationUnavailable, NodeIsolation, settings_from_env
from stoker.workers.sandbox import _remap, init_exit_to_returncode, runtime_prefix


def test_a_function_gets_the_nodes_level_even_when_it_asks_for_less() -> None:
    node = NodeIsolation(level="namespace", network_namespaces=True, root_dir="/r", hidden=("/h",))
    assert node.for_function("auto", True)["level"] == "namespace"
    # the node's level is the operator's floor: a manifest cannot lower it (deploys refuse it first)
    assert node.for_function("process", True)["level"] == "namespace"
    spec = node.for_function("auto", False)
    assert spec["network"] is False and spec["hidden"] == ["/h"] and spec["root_dir"] == "/r"


def test_a_function_asking_for_more_than_the_node_has_is_refused_clearly() -> None:
    node = NodeIsolation(level="process", network_namespaces=False, reason="STOKER_ISOLATION=process")
    with pytest.raises(IsolationUnavailable, match='isolation = "auto"'):
        node.for_function("namespace", True)
    with pytest.raises(IsolationUnavailable, match="network = false"):
        node.for_function("auto", False)
    assert node.for_function("auto", True)["level"] == "process"


@pytest.mark.parametrize("name,value,message", [
    ("STOKER_ISOLATION", "vm", "STOKER_ISOLATION='vm' is not valid"),
    ("STOKER_WORKER_UID_BASE", "-5", "STOKER_WORKER_UID_BASE='-5' is not valid"),
    ("STOKER_WORKER_TMP_MB", "lots", "STOKER_WORKER_TMP_MB='lots' is not valid"),
    ("STOKER_SANDBOX_BINDS", "relative/dir", "not an absolute path"),
])
def test_bad_isolation_settings_are_named(name: str, value: str, message: str, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message):
        settings_from_env(tmp_path)


def test_the_view_never_exposes_the_data_directory_or_whole_top_level_folders(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "node").mkdir(parents=True)
    runtime = tmp_path / "opt" / "node20"
    runtime.mkdir(parents=True)
    layout = mountview.Layout(hidden=(str(home),))
    assert not layout.add_dir(str(home / "node"))  # inside the data directory
    assert not layout.add_dir(str(tmp_path))  # holds the data directory
    assert not layout.add_dir("/root") and not layout.add_dir("/home") and not layout.add_dir("/")
    assert layout.add_dir(str(runtime)) and layout.covers(str(runtime / "bin"))
    assert not layout.add_dir(str(runtime / "lib"))  # already covered


def test_paths_are_translated_longest_first() -> None:
    mapping = {"/h/work/w1": "/tmp", "/h/work/w1/tmp": "/tmp", "/h/bundles/x/code": "/var/task"}
    assert _remap("/h/work/w1/tmp", mapping) == "/tmp"
    assert _remap("/h/work/w1/tmp/a", mapping) == "/tmp/a"
    assert _remap("/h/bundles/x/code/bootstrap", mapping) == "/var/task/bootstrap"
    assert _remap("/h/bundles/x/codes", mapping) == "/h/bundles/x/codes"


def test_an_inits_exit_status_becomes_the_workers() -> None:
    assert init_exit_to_returncode(137) == -9 and init_exit_to_returncode(139) == -11
    assert init_exit_to_returncode(1) == 1 and init_exit_to_returncode(0) == 0


def test_a_programs_installation_is_its_prefix(tmp_path: Path) -> None:
    (tmp_path / "node" / "bin").mkdir(parents=True)
    (tmp_path / "node" / "bin" / "node").write_text("")
    assert runtime_prefix(str(tmp_path / "node" / "bin" / "node")) == str(tmp_path / "node")
    assert runtime_prefix(str(tmp_path / "node" / "node")) == str(tmp_path / "node")
