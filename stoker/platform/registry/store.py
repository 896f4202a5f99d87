"""The registry's SQL side: the truth about functions, versions and aliases.

Versions are immutable and numbered per function (1, 2, 3 ...; numbers are never
reused, even after a version is deleted). Deleting a function deletes its versions and
aliases but keeps its row as a tombstone holding the last number, so a function deployed
again under the same name goes on counting and a (function, version) pair in the ledger
always names one piece of code.

Aliases keep a history of their earlier states (newest last) so that a rollback can put
back the state before the last change. Everything here is synchronous SQLAlchemy; async
callers run it in a thread (see `lifecycle` for the operations that also re-project).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from stoker.errors import Conflict, InvalidInput, NotFound
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
    #: additional version (as a string) -> share of invocations
    weights: dict[str, float]
    #: earlier states, newest last: {"version": int, "weights": {...}, "until": iso time}
    history: list[dict[str, Any]]
    updated_at: dt.datetime | None = None

    def versions(self) -> set[int]:
        """Every version this alias can route to."""
        return {self.version, *(int(v) for v in self.weights)}

    def to_json(self) -> dict[str, Any]:
        previous = self.history[-1] if self.history else None
        return {"function": self.function, "alias": self.name, "version": str(self.version),
                "weights": dict(self.weights),
                "previous": _state_json(previous) if previous else None,
                "updated_at": self.updated_at.isoformat() if self.updated_at else None}


def _state_json(state: dict[str, Any]) -> dict[str, Any]:
    return {"version": str(state["version"]), "weights": dict(state.get("weights") or {})}


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
                     weights=dict(row.weights or {}), history=list(row.history or []),
                     updated_at=row.updated_at)


#: alias names as Lambda allows them: not all digits (those are versions), not $LATEST
ALIAS_RE = re.compile(r"^(?!\d+$)[A-Za-z0-9_-]{1,128}$")
#: alias states kept for rollback
HISTORY_LIMIT = 50


def check_alias_name(alias: str) -> None:
    if not ALIAS_RE.match(alias):
        raise InvalidInput(f"alias name {alias!r} is not valid: use 1-128 letters, digits, '-' or '_', "
                           "not only digits (those name versions)")


def check_weights(version: int, weights: dict[int, float]) -> dict[str, float]:
    """Lambda's AdditionalVersionWeights: shares in [0, 1] summing to at most 1, other versions only."""
    out: dict[str, float] = {}
    for other, weight in sorted(weights.items()):
        if other == version:
            raise InvalidInput(f"--weight {other}={weight}: version {other} is the alias's own version; "
                               "weights route a share to other versions (it gets the rest)")
        if not 0.0 <= weight <= 1.0:
            raise InvalidInput(f"--weight {other}={weight}: a weight is a share from 0 to 1 (e.g. 0.1 for 10%)")
        if weight > 0:
            out[str(other)] = float(weight)
    if sum(out.values()) > 1.0 + 1e-9:
        raise InvalidInput(f"the weights add up to {sum(out.values()):g}: together they may route at most 1 "
                           "(all) of the invocations")
    return out


@dataclass(frozen=True)
class AliasChange:
    """What an alias pointed at before and after a change (before is None when it was created)."""

    alias: AliasInfo
    before: AliasInfo | None

    @property
    def changed(self) -> bool:
        b = self.before
        return b is None or (b.version, b.weights) != (self.alias.version, self.alias.weights)


class RegistryStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- deploys --------------------------------------------------------------------------
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
        with Session(self.engine) as session, session.begin():
            fn = session.get(Function, spec.name, with_for_update=True)
            now = _now()
            if fn is not None:
                newest = session.scalars(select(Version).where(Version.function == spec.name)
                                         .order_by(Version.version.desc()).limit(1)).first()
                # the spec can differ for the same code: relative trigger paths resolve
                # against the folder deployed from
                if newest is not None and newest.code_hash == code_hash and _same_spec(newest.spec, spec):
                    return newest.version, False
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

    # -- reading --------------------------------------------------------------------------
    def function_names(self) -> list[str]:
        """Functions with at least one version (deleted functions leave a tombstone row)."""
        with self.engine.connect() as conn:
            query = select(Function.name).where(Function.name.in_(select(Version.function))).order_by(Function.name)
            return [r[0] for r in conn.execute(query)]

    def state(self, name: str) -> FunctionState:
        with Session(self.engine) as session:
            return self._state(session, name)

    @staticmethod
    def _state(session: Session, name: str) -> FunctionState:
        versions = session.scalars(select(Version).where(Version.function == name)).all()
        if not versions:
            raise NotFound(f"function {name!r} does not exist: deploy it first (see `stoker functions`)")
        aliases = session.scalars(select(Alias).where(Alias.function == name)).all()
        return FunctionState(
            name=name,
            # $LATEST is the newest version that still exists
            latest=max(v.version for v in versions),
            versions={v.version: _version_info(v) for v in versions},
            aliases={a.name: _alias_info(a) for a in aliases},
        )

    def states(self) -> list[FunctionState]:
        out = []
        for name in self.function_names():
            try:
                out.append(self.state(name))
            except NotFound:  # deleted meanwhile
                continue
        return out

    def latest(self, name: str) -> VersionInfo:
        state = self.state(name)
        return state.versions[state.latest]

    def referenced_hashes(self) -> set[str]:
        """The content hashes of every existing version (bundles that must be kept)."""
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(select(Version.code_hash).distinct())}

    # -- aliases --------------------------------------------------------------------------
    def set_alias(self, function: str, alias: str, version: int, weights: dict[int, float] | None = None,
                  must_exist: bool | None = None) -> AliasChange:
        """Create or move an alias; weights replace earlier ones (none given: none kept).

        must_exist: True refuses to create (Lambda's UpdateAlias), False refuses to move
        (CreateAlias), None does either.
        """
        check_alias_name(alias)
        clean = check_weights(version, weights or {})
        with Session(self.engine) as session, session.begin():
            state = self._state(session, function)
            for v in (version, *(int(o) for o in clean)):
                if v not in state.versions:
                    raise NotFound(f"function {function!r} has no version {v}: see `stoker versions {function}`")
            row = session.get(Alias, (function, alias), with_for_update=True)
            if row is None and must_exist:
                raise NotFound(f"function {function!r} has no alias {alias!r}: see `stoker alias ls {function}`")
            if row is not None and must_exist is False:
                raise Conflict(f"alias {alias!r} of {function!r} exists already (version {row.version}): "
                               "move it with `stoker alias set` (UpdateAlias)")
            before = _alias_info(row) if row is not None else None
            self._move(session, function, alias, row, version, clean)
            session.flush()
            after = session.get(Alias, (function, alias))
            assert after is not None
            return AliasChange(alias=_alias_info(after), before=before)

    @staticmethod
    def _move(session: Session, function: str, alias: str, row: Alias | None, version: int,
              weights: dict[str, float], history: list[dict[str, Any]] | None = None) -> None:
        """Point the alias at (version, weights), remembering the state it leaves."""
        now = _now()
        if row is None:
            session.add(Alias(function=function, name=alias, version=version, weights=weights,
                              history=history or [], updated_at=now))
            return
        if (row.version, dict(row.weights or {})) == (version, weights) and history is None:
            return  # unchanged: no history entry either
        past = list(row.history or []) if history is None else history
        past.append({"version": row.version, "weights": dict(row.weights or {}), "until": now.isoformat()})
        row.version, row.weights, row.history = version, weights, past[-HISTORY_LIMIT:]
        row.updated_at = now

    def rollback_alias(self, function: str, alias: str, to: int | None = None) -> AliasChange:
        """Put the alias back to its state before its last change, or on version `to` alone.

        A rollback is itself a change: rolling back twice returns to where it started.
        """
        with Session(self.engine) as session, session.begin():
            state = self._state(session, function)
            row = session.get(Alias, (function, alias), with_for_update=True)
            if row is None:
                known = ", ".join(sorted(state.aliases)) or "none"
                raise NotFound(f"function {function!r} has no alias {alias!r} (its aliases: {known})")
            before = _alias_info(row)
            history = list(row.history or [])
            if to is not None:
                target_version, target_weights = to, {}
            elif history:
                previous = history.pop()
                target_version, target_weights = int(previous["version"]), dict(previous.get("weights") or {})
            else:
                raise Conflict(f"alias {alias!r} of {function!r} has not been moved since it was made, so there "
                               f"is nothing to roll back to: give --to VERSION")
            for v in (target_version, *(int(o) for o in target_weights)):
                if v not in state.versions:
                    raise Conflict(f"cannot roll {alias!r} back to version {v} of {function!r}: that version "
                                   "was deleted. Give --to VERSION (see `stoker versions " + function + "`)")
            if (row.version, dict(row.weights or {})) == (target_version, target_weights):
                return AliasChange(alias=before, before=before)  # already there
            self._move(session, function, alias, row, target_version, target_weights, history=history)
            session.flush()
            after = session.get(Alias, (function, alias))
            assert after is not None
            return AliasChange(alias=_alias_info(after), before=before)

    def delete_alias(self, function: str, alias: str) -> AliasInfo:
        with Session(self.engine) as session, session.begin():
            state = self._state(session, function)
            row = session.get(Alias, (function, alias), with_for_update=True)
            if row is None:
                raise NotFound(f"function {function!r} has no alias {alias!r}: see `stoker alias ls {function}`")
            # the triggers in force are the newest version's: one bound to this alias would stop working
            triggers = state.versions[state.latest].spec.triggers
            bound = [f"#{i} ({t.get('type')})" for i, t in enumerate(triggers, start=1) if t.get("qualifier") == alias]
            if bound:
                raise Conflict(f"alias {alias!r} of {function!r} is bound by trigger {', '.join(bound)} of "
                               f"stoker.toml: deploy {function} without that qualifier first, then remove the alias")
            info = _alias_info(row)
            session.delete(row)
            return info

    # -- deleting -------------------------------------------------------------------------
    def delete_version(self, function: str, version: int) -> FunctionState:
        """Delete one version; refused while an alias routes to it. Returns the state after."""
        with Session(self.engine) as session, session.begin():
            state = self._state(session, function)
            if version not in state.versions:
                raise NotFound(f"function {function!r} has no version {version}: see `stoker versions {function}`")
            users = sorted(a.name for a in state.aliases.values() if version in a.versions())
            if users:
                names = ", ".join(users)
                raise Conflict(f"version {version} of {function!r} is used by alias {names}: move or remove "
                               f"{'it' if len(users) == 1 else 'them'} first (stoker alias set|rm {function} "
                               f"{users[0]} ...)")
            if len(state.versions) == 1:
                raise Conflict(f"version {version} is the only version of {function!r}: delete the function "
                               f"with `stoker rm {function}`")
            session.execute(delete(Version).where(Version.function == function, Version.version == version))
            session.flush()
            return self._state(session, function)

    def delete_function(self, function: str) -> FunctionState:
        """Delete every version and alias; the function row stays as a tombstone. Returns the state before."""
        with Session(self.engine) as session, session.begin():
            state = self._state(session, function)
            session.execute(delete(Alias).where(Alias.function == function))
            session.execute(delete(Version).where(Version.function == function))
            fn = session.get(Function, function, with_for_update=True)
            if fn is not None:
                fn.updated_at = _now()
            return state
