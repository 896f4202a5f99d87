"""The registry's SQL operations: versions, aliases with history, rollback, deletion rules.

Runs on SQLite and on PostgreSQL (the `db_url` fixture)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stoker.errors import Conflict, InvalidInput, NotFound
from stoker.platform.db import make_engine, migrate
from stoker.platform.manifest import FunctionSpec
from stoker.platform.registry.store import RegistryStore


@pytest.fixture
def store(db_url: str) -> Iterator[RegistryStore]:
    migrate(db_url)
    engine = make_engine(db_url)
    yield RegistryStore(engine)
    engine.dispose()


def deploy(store: RegistryStore, code: str, name: str = "shop", by: str | None = "ci") -> tuple[int, bool]:
    return store.record_deploy(FunctionSpec(name=name), code * 64, by)


def test_versions_are_numbered_and_identical_redeploys_make_none(store: RegistryStore) -> None:
    assert deploy(store, "a") == (1, True)
    assert deploy(store, "a") == (1, False)
    assert deploy(store, "b") == (2, True)
    state = store.state("shop")
    assert state.latest == 2 and sorted(state.versions) == [1, 2]
    assert state.versions[2].deployed_by == "ci" and state.versions[1].code_hash == "a" * 64


def test_alias_history_and_rollback_toggles(store: RegistryStore) -> None:
    for code in "abc":
        deploy(store, code)
    created = store.set_alias("shop", "prod", 1)
    assert created.before is None and created.alias.version == 1
    moved = store.set_alias("shop", "prod", 2, {3: 0.25})
    assert moved.changed and moved.before is not None and moved.before.version == 1
    assert moved.alias.weights == {"3": 0.25}
    assert not store.set_alias("shop", "prod", 2, {3: 0.25}).changed  # no history entry for no change
    back = store.rollback_alias("shop", "prod")
    assert (back.alias.version, back.alias.weights) == (1, {})
    again = store.rollback_alias("shop", "prod")  # a rollback is a change: twice returns to the start
    assert (again.alias.version, again.alias.weights) == (2, {"3": 0.25})
    to = store.rollback_alias("shop", "prod", to=3)
    assert (to.alias.version, to.alias.weights) == (3, {})
    assert to.alias.to_json()["previous"] == {"version": "2", "weights": {"3": 0.25}}


def test_alias_set_without_weights_clears_them(store: RegistryStore) -> None:
    deploy(store, "a")
    deploy(store, "b")
    store.set_alias("shop", "prod", 1, {2: 0.5})
    assert store.set_alias("shop", "prod", 1).alias.weights == {}


@pytest.mark.parametrize(("alias", "version", "weights", "error", "words"), [
    ("123", 1, {}, InvalidInput, "not only digits"),
    ("bad name", 1, {}, InvalidInput, "not valid"),
    ("prod", 9, {}, NotFound, "no version 9"),
    ("prod", 1, {9: 0.1}, NotFound, "no version 9"),
    ("prod", 1, {1: 0.1}, InvalidInput, "alias's own version"),
    ("prod", 1, {2: 1.5}, InvalidInput, "from 0 to 1"),
])
def test_bad_alias_changes_are_refused(store: RegistryStore, alias: str, version: int, weights: dict[int, float],
                                       error: type[Exception], words: str) -> None:
    deploy(store, "a")
    deploy(store, "b")
    with pytest.raises(error, match=words):
        store.set_alias("shop", alias, version, weights)
    assert store.state("shop").aliases == {}


def test_create_only_and_update_only(store: RegistryStore) -> None:
    deploy(store, "a")
    with pytest.raises(NotFound):
        store.set_alias("shop", "prod", 1, must_exist=True)
    store.set_alias("shop", "prod", 1, must_exist=False)
    with pytest.raises(Conflict, match="exists already"):
        store.set_alias("shop", "prod", 1, must_exist=False)


def test_rollback_needs_a_past_and_a_living_target(store: RegistryStore) -> None:
    for code in "abc":
        deploy(store, code)
    store.set_alias("shop", "prod", 1)
    with pytest.raises(Conflict, match="nothing to roll back to"):
        store.rollback_alias("shop", "prod")
    store.set_alias("shop", "prod", 2)
    store.set_alias("shop", "prod", 3)
    store.set_alias("shop", "beta", 3)
    store.delete_version("shop", 2)
    with pytest.raises(Conflict, match=r"version 2 .* was deleted"):
        store.rollback_alias("shop", "prod")
    assert store.state("shop").aliases["prod"].version == 3
    with pytest.raises(NotFound, match="no alias 'nope'"):
        store.rollback_alias("shop", "nope")


def test_a_version_an_alias_uses_cannot_be_deleted(store: RegistryStore) -> None:
    for code in "abc":
        deploy(store, code)
    store.set_alias("shop", "prod", 1)
    store.set_alias("shop", "canary", 3, {2: 0.1})
    with pytest.raises(Conflict, match="used by alias prod"):
        store.delete_version("shop", 1)
    with pytest.raises(Conflict, match="used by alias canary"):
        store.delete_version("shop", 2)
    store.delete_alias("shop", "canary")
    after = store.delete_version("shop", 2)
    assert sorted(after.versions) == [1, 3] and after.latest == 3


def test_the_only_version_is_deleted_with_the_function(store: RegistryStore) -> None:
    deploy(store, "a")
    with pytest.raises(Conflict, match="only version"):
        store.delete_version("shop", 1)


def test_deleting_the_newest_makes_the_one_before_latest(store: RegistryStore) -> None:
    deploy(store, "a")
    deploy(store, "b")
    assert store.delete_version("shop", 2).latest == 1
    # an identical redeploy compares with the newest version that exists
    assert deploy(store, "a") == (1, False)
    assert deploy(store, "b") == (3, True)  # numbers are never reused


def test_deleted_function_is_gone_but_numbering_goes_on(store: RegistryStore) -> None:
    deploy(store, "a")
    deploy(store, "b")
    store.set_alias("shop", "prod", 1)
    store.delete_function("shop")
    with pytest.raises(NotFound):
        store.state("shop")
    assert store.function_names() == [] and store.states() == []
    assert store.referenced_hashes() == set()
    assert deploy(store, "a") == (3, True)
    assert store.state("shop").aliases == {}


def test_referenced_hashes(store: RegistryStore) -> None:
    deploy(store, "a")
    deploy(store, "b", name="other")
    assert store.referenced_hashes() == {"a" * 64, "b" * 64}

