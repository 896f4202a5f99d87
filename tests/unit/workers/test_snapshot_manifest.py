"""`snapshot` in a manifest: a boolean, and only for Python functions."""

from __future__ import annotations

import pytest

from stoker.errors import ConfigError
from stoker.platform.manifest import parse_manifest


def test_snapshot_defaults_to_false_and_takes_true() -> None:
    assert parse_manifest('[function]\nname = "f"\n').snapshot is False
    assert parse_manifest('[function]\nname = "f"\nsnapshot = true\n').snapshot is True


def test_snapshot_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError) as e:
        parse_manifest('[function]\nname = "f"\nsnapshot = "yes"\n')
    assert "snapshot" in e.value.message and "true or false" in e.value.message


@pytest.mark.parametrize("runtime", ["nodejs", "provided"])
def test_snapshot_is_refused_for_runtimes_that_are_not_python(runtime: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_manifest(f'[function]\nname = "f"\nruntime = "{runtime}"\nhandler = "index.handler"\nsnapshot = true\n')
    assert "snapshot = true is for Python functions" in e.value.message
    assert "Remove snapshot" in e.value.message
