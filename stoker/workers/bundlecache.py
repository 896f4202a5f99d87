"""A node's cache of unpacked bundles, by content hash.

A bundle is unpacked once per hash and shared, read-only, by every worker of every
version with that code. It comes from the local bundle store when this node shares a
data directory with the gateway (`stoker up`), otherwise from a gateway over HTTP: nodes
need no shared file system.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path

import httpx
import redis.asyncio as aioredis

from stoker.errors import NotFound, PlatformUnavailable
from stoker.platform.keys import Keys
from stoker.platform.registry.bundles import BundleStore, extract_bundle

READY = ".stoker-ready"


class BundleCache:
    def __init__(self, root: Path, store: BundleStore | None, redis: aioredis.Redis, keys: Keys,
                 token: str | None) -> None:
        self.root = root
        self.store = store
        self.redis = redis
        self.keys = keys
        self.token = token
        self._locks: dict[str, asyncio.Lock] = {}

    def _dir(self, code_hash: str) -> Path:
        return self.root / code_hash

    async def ensure(self, code_hash: str) -> Path:
        """The unpacked bundle's folder (the function's task root)."""
        target = self._dir(code_hash)
        if (target / READY).exists():
            return target / "code"
        lock = self._locks.setdefault(code_hash, asyncio.Lock())
        async with lock:
            if (target / READY).exists():
                return target / "code"
            data = await self._fetch(code_hash)
            await asyncio.to_thread(self._unpack, code_hash, data)
        return target / "code"

    def _unpack(self, code_hash: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.root, 0o700)  # workers reach their own bundle only: bound, or through a held descriptor
        staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=self.root))
        try:
            extract_bundle(data, staging / "code")
            for dirpath, dirnames, filenames in os.walk(staging):
                for d in dirnames:
                    os.chmod(os.path.join(dirpath, d), 0o755)
                for f in filenames:
                    p = os.path.join(dirpath, f)
                    os.chmod(p, 0o555 if os.stat(p).st_mode & 0o111 else 0o444)
            os.chmod(staging, 0o755)
            (staging / READY).touch()
            target = self._dir(code_hash)
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    async def _fetch(self, code_hash: str) -> bytes:
        if self.store is not None and self.store.has(code_hash):
            return await asyncio.to_thread(self.store.get, code_hash)
        gateways = await self.redis.hgetall(self.keys.gateways)
        urls = sorted(gateways, key=lambda u: -int(gateways[u] or 0))
        if not urls:
            raise PlatformUnavailable(
                f"bundle {code_hash[:12]} is not here and no gateway is registered to fetch it from")
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        last: Exception | None = None
        async with httpx.AsyncClient(timeout=60) as client:
            for raw in urls:
                url = raw.decode() if isinstance(raw, bytes) else str(raw)
                try:
                    r = await client.get(f"{url}/api/bundles/{code_hash}", headers=headers)
                except httpx.HTTPError as e:
                    last = e
                    continue
                if r.status_code == 200:
                    return r.content
                last = NotFound(f"gateway {url} answered {r.status_code} for bundle {code_hash[:12]}")
        raise PlatformUnavailable(f"could not fetch bundle {code_hash[:12]}: {last}")
