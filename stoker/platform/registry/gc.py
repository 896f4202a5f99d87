"""Bundle garbage collection: delete stored bundles that no version references any more.

A deploy and a collection may run at the same time on different machines, so a deploy
*claims* its content hash (in Redis) from before it looks for the bundle in the store
until its version is committed. A collection moves each unreferenced, unclaimed bundle
aside first, then reads the references and claims again, and only then deletes it (or
puts it back). Whichever order the steps interleave in, a committed version never
points at a deleted bundle.

Redis key (owned here):
    {p}:bundles:claims   zset "code_hash:nonce" -> claim time (ms); claims older than an
                         hour are ignored (a deploy that crashed mid-way)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path

import redis.asyncio as aioredis

from stoker.platform.keys import Keys
from stoker.platform.registry.bundles import BundleStore, restore_bundle, trash_bundle
from stoker.platform.registry.store import RegistryStore

log = logging.getLogger(__name__)

CLAIM_TTL_MS = 3600 * 1000
#: leftovers of interrupted uploads (and collections) are cleared after this long
STALE_UPLOAD_S = 3600.0


def claims_key(keys: Keys) -> str:
    return keys.custom("bundles", "claims")


@contextlib.asynccontextmanager
async def bundle_claim(redis: aioredis.Redis, keys: Keys, code_hash: str) -> AsyncIterator[None]:
    """Hold a claim on `code_hash` while a deploy checks, stores and records its bundle."""
    member = f"{code_hash}:{secrets.token_hex(6)}"
    await redis.zadd(claims_key(keys), {member: int(time.time() * 1000)})
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await redis.zrem(claims_key(keys), member)


async def claimed_hashes(redis: aioredis.Redis, keys: Keys) -> set[str]:
    since = int(time.time() * 1000) - CLAIM_TTL_MS
    members = await redis.zrangebyscore(claims_key(keys), since, "+inf")
    return {(m.decode() if isinstance(m, bytes) else str(m)).split(":", 1)[0] for m in members}


async def collect_bundles(redis: aioredis.Redis, keys: Keys, registry: RegistryStore,
                          store: BundleStore) -> list[str]:
    """Delete every stored bundle that no version references and no deploy claims. Returns their hashes."""
    stored = await asyncio.to_thread(store.hashes)
    keep = await asyncio.to_thread(registry.referenced_hashes) | await claimed_hashes(redis, keys)
    trashed: dict[str, Path] = {}
    for code_hash in sorted(stored - keep):
        path = await asyncio.to_thread(trash_bundle, store, code_hash)
        if path is not None:
            trashed[code_hash] = path
    if not trashed:
        await asyncio.to_thread(_remove_stale_uploads, store)
        return []
    # a deploy that found the bundle before it was moved aside has claimed or recorded it by now
    keep = await asyncio.to_thread(registry.referenced_hashes) | await claimed_hashes(redis, keys)
    removed = []
    for code_hash, path in trashed.items():
        if code_hash in keep:
            await asyncio.to_thread(restore_bundle, store, code_hash, path)
        else:
            await asyncio.to_thread(path.unlink, True)
            removed.append(code_hash)
    await asyncio.to_thread(_remove_stale_uploads, store)
    if removed:
        log.info("removed %d unreferenced bundle(s)", len(removed))
    return removed


def _remove_stale_uploads(store: BundleStore) -> None:
    """Interrupted uploads are deleted; bundles a crashed collection left aside are put back
    (the next collection decides about them again)."""
    if not store.root.exists():
        return
    cutoff = time.time() - STALE_UPLOAD_S
    for leftover in store.root.glob(".upload-*"):
        with contextlib.suppress(OSError):
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
    for leftover in store.root.glob(".trash-*"):
        code_hash = leftover.name.split("-")[1]
        with contextlib.suppress(OSError, ValueError):
            if leftover.stat().st_ctime < cutoff:
                if store.has(code_hash):
                    leftover.unlink()
                else:
                    restore_bundle(store, code_hash, leftover)
