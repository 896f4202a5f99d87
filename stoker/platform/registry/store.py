"""The registry's SQL side: the truth about functions, versions and aliases.

Versions are immutable and numbered per function (1, 2, 3 ...; numbers are never
reused, even after a version is deleted). Everything here is synchronous SQLAlchemy;
async callers run it in a thread.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from stoker.errors import NotFound
from stoker.platform.manifest import FunctionSpec
from stoker.platform.registry.models import Alias, Function, Version


@dataclass(frozen=True)
class VersionInfo:
    function: str
    version: int
    code_hash: str
    spec: FunctionSpec
    deployed_at: dt.datetime
    deployed_by: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "version": str(self.version),
            "code_hash": self.code_hash,
            "deployed_at": self.deployed_at.isoformat(),
            "deployed_by": self.deployed_by,
            "runtime": self.spec.runtime,
            "handler": self.spec.handler,
            "memory": self.spec.memory,
            "timeout": self.spec.timeout,
        }


@dataclass(frozen=True)
class AliasInfo:
    function: str
    name: str
    version: int
    weights: dict[str, float]
    history: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"function": self.function, "alias": self.name, "version": str(self.version),
                "weights": dict(self.weights)}


@dataclass(frozen=True)
class FunctionState:
    """Everything the projection needs about one function."""

    name: str
    latest: int
    versions: dict[int, VersionInfo]
    aliases: dict[str, AliasInfo]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _same_spec(stored: dict[str, Any], spec: FunctionSpec) -> bool:
    import orjson

    return bool(orjson.dumps(stored, option=orjson.OPT_SORT_KEYS)
                == orjson.dumps(spec.to_json(), option=orjson.OPT_SORT_KEYS))


def _version_info(row: Version) -> VersionInfo:
    return VersionInfo(function=row.function, version=row.version, code_hash=row.code_hash,
                       spec=FunctionSpec.from_json(row.spec), deployed_at=row.deployed_at,
                       deployed_by=row.deployed_by)


def _alias_info(row: Alias) -> AliasInfo:
    return AliasInfo(function=row.function, name=row.name, version=row.version,
                     weights=dict(row.weights or {}), history=list(row.history or []))


class RegistryStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record_deploy(self, spec: FunctionSpec, code_hash: str, deployed_by: str | None) -> tuple[int, bool]:
        """Make a new version unless the newest one has this exact content.

        Returns (version, created). Concurrent deploys of one function are serialised by
        the primary key: the loser retries with the next number.
        """
        for _ in range(5):
            try:
                return self._record_deploy_once(spec, code_hash, deployed_by)
            except IntegrityError:
                continue
        raise RuntimeError(f"could not record a deploy of {spec.name}: too many concurrent deploys")

    def _record_deploy_once(self, spec: FunctionSpec, code_hash: str,
                            deployed_by: str | None) -> tuple[int, bool]:
        from sqlalchemy.orm import Session

        with Session(self.engine) as session, session.begin():
            fn = session.get(Function, spec.name, with_for_update=True)
            now = _now()
            if fn is not None:
                latest = session.get(Version, (spec.name, fn.latest_version))
                # the spec can differ for the same code: relative trigger paths resolve
                # against the folder deployed from
                if latest is not None and latest.code_hash == code_hash and _same_spec(latest.spec, spec):
                    return fn.latest_version, False
                number = fn.latest_version + 1
                fn.latest_version = number
                fn.updated_at = now
            else:
                number = 1
                session.add(Function(name=spec.name, latest_version=1, created_at=now, updated_at=now))
                session.flush()
            session.add(Version(function=spec.name, version=number, code_hash=code_hash,
                                spec=spec.to_json(), deployed_at=now, deployed_by=deployed_by))
            return number, True

    def function_names(self) -> list[str]:
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(select(Function.name).order_by(Function.name))]

    def state(self, name: str) -> FunctionState:
        from sqlalchemy.orm import Session

        with Session(self.engine) as session:
            fn = session.get(Function, name)
            if fn is None:
                raise NotFound(f"function {name!r} does not exist: deploy it first (see `stoker functions`)")
            versions = session.scalars(select(Version).where(Version.function == name)).all()
            aliases = session.scalars(select(Alias).where(Alias.function == name)).all()
            return FunctionState(
                name=name,
                # $LATEST is the newest version that still exists
                latest=max((v.version for v in versions), default=fn.latest_version),
                versions={v.version: _version_info(v) for v in versions},
                aliases={a.name: _alias_info(a) for a in aliases},
            )

    def states(self) -> list[FunctionState]:
        return [self.state(n) for n in self.function_names()]

    def latest(self, name: str) -> VersionInfo:
        state = self.state(name)
        newest = max(state.versions) if state.versions else None
        if newest is None:
            raise NotFound(f"function {name!r} has no versions")
        return state.versions[newest]
