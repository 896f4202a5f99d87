"""A trigger bound to a qualifier that does not exist is refused at deploy (docs/versions.md), on
a real SQLite registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stoker.errors import ConfigError
from stoker.platform.db import make_engine, migrate
from stoker.platform.manifest import FunctionSpec
from stoker.platform.registry.deploy import check_trigger_qualifiers
from stoker.platform.registry.store import RegistryStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RegistryStore]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    migrate(url)
    engine = make_engine(url)
    yield RegistryStore(engine)
    engine.dispose()


def bound(qualifier: str, kind: str = "queue") -> FunctionSpec:
    return FunctionSpec(name="shop", triggers=({"type": "cron", "schedule": "@daily"},
                                               {"type": kind, "queue": "orders", "qualifier": qualifier}))


def test_an_alias_that_does_not_exist_is_refused_saying_how_to_create_it(store: RegistryStore) -> None:
    with pytest.raises(ConfigError) as first:
        check_trigger_qualifiers(bound("prod"), store)
    assert "trigger #2 (queue) has qualifier = 'prod'" in first.value.message
    assert "first deploy" in first.value.message and "stoker alias set shop prod VERSION" in first.value.message
    store.record_deploy(FunctionSpec(name="shop"), "a" * 64, "ci")
    with pytest.raises(ConfigError, match="has no alias 'prod'"):
        check_trigger_qualifiers(bound("prod"), store)
    store.set_alias("shop", "prod", 1)
    check_trigger_qualifiers(bound("prod"), store)


def test_versions_must_exist_or_be_the_one_this_deploy_makes(store: RegistryStore) -> None:
    check_trigger_qualifiers(bound("1"), store)  # the first deploy makes version 1
    with pytest.raises(ConfigError, match="has no version 2"):
        check_trigger_qualifiers(bound("2"), store)
    store.record_deploy(FunctionSpec(name="shop"), "a" * 64, "ci")
    check_trigger_qualifiers(bound("1"), store)
    check_trigger_qualifiers(bound("2"), store)
    with pytest.raises(ConfigError, match="has no version 3"):
        check_trigger_qualifiers(bound("3"), store)


def test_latest_and_unbound_triggers_need_nothing(store: RegistryStore) -> None:
    check_trigger_qualifiers(bound("$LATEST"), store)
    check_trigger_qualifiers(FunctionSpec(name="shop"), store)


def test_an_alias_a_trigger_is_bound_to_cannot_be_removed(store: RegistryStore) -> None:
    from stoker.errors import Conflict

    store.record_deploy(FunctionSpec(name="shop"), "a" * 64, "ci")
    store.set_alias("shop", "prod", 1)
    store.record_deploy(bound("prod"), "a" * 64, "ci")  # version 2 binds its queue trigger to prod
    with pytest.raises(Conflict, match=r"bound by trigger #2 \(queue\)"):
        store.delete_alias("shop", "prod")
    assert "prod" in store.state("shop").aliases
    store.record_deploy(FunctionSpec(name="shop"), "a" * 64, "ci")  # version 3: no binding
    store.delete_alias("shop", "prod")
    assert "prod" not in store.state("shop").aliases
