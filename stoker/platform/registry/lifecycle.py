"""Changing what is deployed: aliases, rollback, deleting versions and functions.

Each operation changes the SQL registry (the truth) in one transaction, then projects
the function into Redis again, so that every gateway, scheduler and node sees the
change at once (pub/sub). Deletes then collect the bundles no version references.

Events already accepted keep the version they were resolved to (the envelope carries
it), so moving an alias never disturbs an invocation in flight.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from stoker.errors import Conflict, NotFound
from stoker.platform.context import PlatformContext
from stoker.platform.registry import projection
from stoker.platform.registry.gc import bundle_claim, collect_bundles
from stoker.platform.registry.store import AliasChange, AliasInfo, FunctionState


async def reproject(ctx: PlatformContext, name: str) -> FunctionState:
    state = await asyncio.to_thread(ctx.require_registry().state, name)
    await projection.publish(ctx.redis, ctx.keys, state)
    ctx.directory.forget(name)
    return state


def _describe_target(version: int | str, weights: dict[str, float]) -> str:
    text = f"version {version}"
    for other, weight in sorted(weights.items()):
        text += f" ({weight:.0%} to version {other})"
    return text


# -- aliases ------------------------------------------------------------------------------

async def set_alias(ctx: PlatformContext, function: str, alias: str, version: int,
                    weights: dict[int, float] | None = None, must_exist: bool | None = None) -> AliasChange:
    change = await asyncio.to_thread(ctx.require_registry().set_alias, function, alias, version, weights,
                                     must_exist)
    await reproject(ctx, function)
    return change


async def delete_alias(ctx: PlatformContext, function: str, alias: str) -> AliasInfo:
    info = await asyncio.to_thread(ctx.require_registry().delete_alias, function, alias)
    await reproject(ctx, function)
    return info


def describe_alias_change(change: AliasChange) -> str:
    a = change.alias
    now = _describe_target(a.version, a.weights)
    if change.before is None:
        return f"alias {a.name} of {a.function} created: {now}"
    if not change.changed:
        return f"alias {a.name} of {a.function} unchanged: {now}"
    was = _describe_target(change.before.version, change.before.weights)
    return f"alias {a.name} of {a.function} moved: {was} -> {now}"


# -- rollback -----------------------------------------------------------------------------

@dataclass(frozen=True)
class RollbackResult:
    function: str
    #: the alias moved, or None when $LATEST was rolled back
    alias: str | None
    version: int
    previous: int
    weights: dict[str, float]
    #: $LATEST: the version made with the older code (None if it was already running it)
    created: int | None = None
    changed: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"function": self.function, "alias": self.alias, "version": str(self.version),
                "previous": str(self.previous), "weights": dict(self.weights),
                "created": str(self.created) if self.created is not None else None, "changed": self.changed,
                "message": self.describe()}

    def describe(self) -> str:
        if self.alias is not None:
            if not self.changed:
                return f"alias {self.alias} of {self.function} already points at version {self.version}"
            return (f"alias {self.alias} of {self.function} rolled back: version {self.previous} -> "
                    f"{_describe_target(self.version, self.weights)}")
        if self.created is None:
            return f"{self.function} $LATEST already runs the code of version {self.version}"
        return (f"{self.function} $LATEST rolled back to the code and configuration of version {self.version}, "
                f"as new version {self.created} (version {self.previous} is kept)")


async def rollback(ctx: PlatformContext, function: str, alias: str | None = None, to: int | None = None,
                   by: str | None = None) -> RollbackResult:
    """Move an alias back (see RegistryStore.rollback_alias); without an alias, roll $LATEST back.

    $LATEST is the newest version, and versions are immutable, so rolling it back makes a
    new version with the code and configuration of the one before (or of `to`).
    """
    registry = ctx.require_registry()
    if alias is not None:
        change = await asyncio.to_thread(registry.rollback_alias, function, alias, to)
        if change.changed:
            await reproject(ctx, function)
        before = change.before or change.alias
        return RollbackResult(function=function, alias=alias, version=change.alias.version,
                              previous=before.version, weights=change.alias.weights, changed=change.changed)
    state = await asyncio.to_thread(registry.state, function)
    if to is None:
        older = [v for v in state.versions if v < state.latest]
        if not older:
            raise Conflict(f"{function} has a single version ({state.latest}): there is nothing to roll back to")
        to = max(older)
    target = state.versions.get(to)
    if target is None:
        raise NotFound(f"function {function!r} has no version {to}: see `stoker versions {function}`")
    async with bundle_claim(ctx.redis, ctx.keys, target.code_hash):
        assert ctx.bundles is not None
        if not await asyncio.to_thread(ctx.bundles.has, target.code_hash):
            raise Conflict(f"the bundle of version {to} of {function!r} is missing from the bundle store; "
                           "deploy the code again instead")
        version, created = await asyncio.to_thread(registry.record_deploy, target.spec, target.code_hash, by)
    await reproject(ctx, function)
    return RollbackResult(function=function, alias=None, version=to, previous=state.latest, weights={},
                          created=version if created else None, changed=created)


# -- deleting -----------------------------------------------------------------------------

@dataclass(frozen=True)
class DeleteResult:
    function: str
    #: the versions deleted
    versions: list[int]
    #: $LATEST after the delete (None: the function is gone)
    latest: int | None
    bundles_removed: int

    def to_json(self) -> dict[str, Any]:
        return {"function": self.function, "versions": [str(v) for v in self.versions],
                "latest": str(self.latest) if self.latest is not None else None,
                "bundles_removed": self.bundles_removed, "message": self.describe()}

    def describe(self) -> str:
        if self.latest is None:
            return f"deleted {self.function} ({len(self.versions)} version{'s' if len(self.versions) != 1 else ''})"
        return f"deleted version {self.versions[0]} of {self.function} ($LATEST is version {self.latest})"


async def collect_garbage(ctx: PlatformContext) -> int:
    if ctx.bundles is None:
        return 0
    removed = await collect_bundles(ctx.redis, ctx.keys, ctx.require_registry(), ctx.bundles)
    return len(removed)


async def delete_version(ctx: PlatformContext, function: str, version: int) -> DeleteResult:
    """Delete one version (refused while an alias routes to it, or if it is the only one)."""
    state = await asyncio.to_thread(ctx.require_registry().delete_version, function, version)
    await projection.publish(ctx.redis, ctx.keys, state)
    ctx.directory.forget(function)
    removed = await collect_garbage(ctx)
    return DeleteResult(function=function, versions=[version], latest=state.latest, bundles_removed=removed)


async def delete_function(ctx: PlatformContext, function: str) -> DeleteResult:
    """Delete a function with all its versions and aliases; its triggers and routes stop."""
    state = await asyncio.to_thread(ctx.require_registry().delete_function, function)
    await projection.unpublish(ctx.redis, ctx.keys, function)
    ctx.directory.forget(function)
    removed = await collect_garbage(ctx)
    return DeleteResult(function=function, versions=sorted(state.versions), latest=None, bundles_removed=removed)
