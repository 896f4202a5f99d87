"""The handles a role needs to talk to the platform: settings, Redis, the database, the registry."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as aioredis
from sqlalchemy import Engine

from stoker.platform.bus import Bus, connect
from stoker.platform.db import make_engine
from stoker.platform.keys import Keys
from stoker.platform.registry.bundles import BundleStore
from stoker.platform.registry.projection import FunctionDirectory
from stoker.platform.registry.store import RegistryStore
from stoker.settings import Settings


@dataclass
class PlatformContext:
    settings: Settings
    redis_url: str
    redis: aioredis.Redis
    keys: Keys
    bus: Bus
    directory: FunctionDirectory
    engine: Engine | None = None
    bundles: BundleStore | None = None
    registry: RegistryStore | None = field(default=None)

    @classmethod
    def create(cls, settings: Settings, redis_url: str | None = None, with_db: bool = True) -> PlatformContext:
        """Nothing connects yet: Redis and the database are reached on first use."""
        url = redis_url or settings.require_redis_url()
        redis = connect(url)
        keys = Keys(settings.prefix)
        engine = make_engine(settings.db_url) if with_db else None
        return cls(
            settings=settings,
            redis_url=url,
            redis=redis,
            keys=keys,
            bus=Bus(redis, keys),
            directory=FunctionDirectory(redis, keys),
            engine=engine,
            bundles=BundleStore(settings.bundle_dir) if with_db else None,
            registry=RegistryStore(engine) if engine is not None else None,
        )

    def require_registry(self) -> RegistryStore:
        if self.registry is None:
            raise RuntimeError("this role was started without a database")
        return self.registry

    async def close(self) -> None:
        await self.directory.stop()
        await self.redis.aclose()
        if self.engine is not None:
            self.engine.dispose()
