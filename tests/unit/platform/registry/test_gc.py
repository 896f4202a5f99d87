"""Bundle garbage collection: unreferenced bundles go, referenced or claimed ones stay,
and a deploy that races a collection never loses its bundle."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import fakeredis
import pytest

from stoker.platform.keys import Keys
from stoker.platform.registry import gc
from stoker.platform.registry.bundles import BundleStore

A, B, C = "a" * 64, "b" * 64, "c" * 64
KEYS = Keys("t")


class References:
    """The registry's answer to "which hashes do versions use", changing between calls."""

    def __init__(self, *answers: set[str]) -> None:
        self.answers = list(answers)

    def referenced_hashes(self) -> set[str]:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def filled(tmp_path: Path) -> BundleStore:
    store = BundleStore(tmp_path / "bundles")
    for h in (A, B, C):
        store.put(h, h.encode())
    return store


def test_unreferenced_bundles_are_removed(tmp_path: Path) -> None:
    store = filled(tmp_path)
    redis = fakeredis.FakeAsyncRedis()
    removed = asyncio.run(gc.collect_bundles(redis, KEYS, References({A}), store))  # type: ignore[arg-type]
    assert sorted(removed) == [B, C]
    assert store.hashes() == {A}
    assert not list(store.root.glob(".trash-*"))


def test_a_claimed_bundle_stays(tmp_path: Path) -> None:
    store = filled(tmp_path)
    redis = fakeredis.FakeAsyncRedis()

    async def collect_while_claimed() -> list[str]:
        async with gc.bundle_claim(redis, KEYS, C):
            removed = await gc.collect_bundles(redis, KEYS, References({A}), store)  # type: ignore[arg-type]
        assert await redis.zcard(gc.claims_key(KEYS)) == 0  # the claim ends with the deploy
        return removed

    assert asyncio.run(collect_while_claimed()) == [B]
    assert store.hashes() == {A, C}


def test_a_deploy_committed_during_the_collection_keeps_its_bundle(tmp_path: Path) -> None:
    store = filled(tmp_path)
    redis = fakeredis.FakeAsyncRedis()
    # unreferenced when the collection starts, referenced by the time it decides
    refs = References({A}, {A, B})
    removed = asyncio.run(gc.collect_bundles(redis, KEYS, refs, store))  # type: ignore[arg-type]
    assert removed == [C]
    assert store.get(B) == B.encode()


def test_stale_claims_do_not_pin_bundles(tmp_path: Path) -> None:
    store = filled(tmp_path)
    redis = fakeredis.FakeAsyncRedis()
    old = int(time.time() * 1000) - gc.CLAIM_TTL_MS - 1000

    async def run() -> list[str]:
        await redis.zadd(gc.claims_key(KEYS), {f"{B}:dead": old})
        return await gc.collect_bundles(redis, KEYS, References({A, C}), store)  # type: ignore[arg-type]

    assert asyncio.run(run()) == [B]


def test_a_crashed_collection_leaves_nothing_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = filled(tmp_path)
    os.rename(store.path(A), store.root / f".trash-{A}-999")  # moved aside, then the collector died
    monkeypatch.setattr(gc, "STALE_UPLOAD_S", -1.0)  # the leftover counts as old
    redis = fakeredis.FakeAsyncRedis()
    asyncio.run(gc.collect_bundles(redis, KEYS, References({A, B, C}), store))  # type: ignore[arg-type]
    assert store.hashes() == {A, B, C}
    assert not list(store.root.glob(".trash-*"))
