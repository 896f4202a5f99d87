"""The function manifest, `stoker.toml`: a `[function]` table and `[[triggers]]` entries.

    [function]
    name = "hello"               # letters, digits, '-' and '_' (1-64), as Lambda
    handler = "handler.handler"  # module.function (python), file.export (nodejs)
    runtime = "python"           # python | nodejs | provided
    memory = 128                 # MB
    timeout = 3                  # seconds
    concurrency = 10             # reserved and capped concurrent executions (unset: no cap)
    retries = 2                  # async retries after the first failure
    retry_delay = 60             # seconds before the first retry, doubling after
    max_event_age = 21600        # seconds an async event may wait in all
    keep_warm = 300              # seconds an idle worker is kept
    min_warm = 0                 # workers kept started ahead of demand
    [function.env]
    KEY = "value"

    [[triggers]]
    type = "..."                 # one of the trigger types (stoker.triggers)

Unknown keys and wrong types are errors that name the key, so a typo never silently
falls back to a default.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from stoker.errors import ConfigError

NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
PY_HANDLER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
NODE_HANDLER_RE = re.compile(r"^[A-Za-z0-9_./-]+\.[A-Za-z_$][A-Za-z0-9_$]*$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RUNTIMES = ("python", "nodejs", "provided")
ISOLATIONS = ("auto", "namespace", "process")

#: a trigger type's validator: takes the raw table (without "type") and the manifest's
#: folder, returns the normalised table or raises ConfigError. Filled in by stoker.triggers.
TriggerValidator = Callable[[dict[str, Any], str | None], dict[str, Any]]
TRIGGER_TYPES: dict[str, TriggerValidator] = {}


def register_trigger_type(name: str, validator: TriggerValidator) -> None:
    TRIGGER_TYPES[name] = validator


@dataclass(frozen=True)
class FunctionSpec:
    """A function version's settings, as deployed (immutable once a version is made)."""

    name: str
    handler: str = "handler.handler"
    runtime: str = "python"
    memory: int = 128
    timeout: float = 3.0
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""
    concurrency: int | None = None
    retries: int = 2
    retry_delay: float = 60.0
    max_event_age: float = 6 * 3600.0
    keep_warm: float = 300.0
    min_warm: int = 0
    retain_payloads: bool = False
    isolation: str = "auto"
    network: bool = True
    snapshot: bool = False
    processes: int = 1024
    output_limit: int = 1024 * 1024
    triggers: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["triggers"] = [dict(t) for t in self.triggers]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FunctionSpec:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["triggers"] = tuple(dict(t) for t in values.get("triggers", ()))
        values["env"] = dict(values.get("env", {}))
        return cls(**values)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check(key: str, value: Any, ok: bool, want: str) -> None:
    if not ok:
        raise ConfigError(f"stoker.toml: [function] {key} = {value!r} is not valid: {want}")


def max_processes() -> int:
    """The most processes a manifest may ask for per worker (the operator's STOKER_MAX_PROCESSES)."""
    raw = os.environ.get("STOKER_MAX_PROCESSES", "") or "1024"
    if not raw.isdigit() or not 1 <= int(raw) <= 100_000:
        raise ConfigError(f"STOKER_MAX_PROCESSES={raw!r} is not valid: give a whole number from 1 to 100000")
    return int(raw)


def _validate_function(table: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    known = set(FunctionSpec.__dataclass_fields__) - {"triggers"}
    for key in table:
        if key not in known:
            raise ConfigError(
                f"stoker.toml: unknown key '{key}' in [function]. Known keys: {', '.join(sorted(known))}"
            )
    if "name" not in table:
        raise ConfigError("stoker.toml: [function] has no 'name': add name = \"my-function\"")
    name = table["name"]
    _check("name", name, isinstance(name, str) and bool(NAME_RE.match(name)),
           "use 1-64 letters, digits, '-' or '_'")
    out["name"] = name
    runtime = table.get("runtime", "python")
    _check("runtime", runtime, runtime in RUNTIMES, "one of " + ", ".join(RUNTIMES))
    out["runtime"] = runtime
    handler = table.get("handler", "handler.handler" if runtime == "python" else "index.handler")
    pattern = PY_HANDLER_RE if runtime == "python" else NODE_HANDLER_RE
    _check("handler", handler, isinstance(handler, str) and bool(pattern.match(handler)),
           "write it as module.function (e.g. handler.handler)" if runtime == "python"
           else "write it as file.export (e.g. index.handler)")
    out["handler"] = handler

    def number(key: str, lo: float, hi: float, integer: bool = False) -> None:
        if key not in table:
            return
        v = table[key]
        ok = (isinstance(v, int) and not isinstance(v, bool)) if integer else _is_number(v)
        kind = "a whole number" if integer else "a number"
        _check(key, v, ok and lo <= v <= hi, f"{kind} from {lo:g} to {hi:g}")
        out[key] = int(v) if integer else float(v)

    number("memory", 64, 10240, integer=True)
    number("timeout", 0.001, 900)
    number("concurrency", 1, 100_000, integer=True)
    number("retries", 0, 10, integer=True)
    number("retry_delay", 0, 3600)
    number("max_event_age", 1, 6 * 3600)
    number("keep_warm", 0, 24 * 3600)
    number("min_warm", 0, 1000, integer=True)
    processes_cap = max_processes()
    if isinstance(table.get("processes"), int) and not isinstance(table.get("processes"), bool) \
            and table["processes"] > processes_cap:
        raise ConfigError(f"stoker.toml: processes = {table['processes']} is over this platform's limit of "
                          f"{processes_cap} processes per worker (STOKER_MAX_PROCESSES, the operator's): "
                          "ask for fewer")
    number("processes", 1, processes_cap, integer=True)
    number("output_limit", 1024, 1024 ** 3, integer=True)
    for key in ("retain_payloads", "network", "snapshot"):
        if key in table:
            _check(key, table[key], isinstance(table[key], bool), "true or false")
            out[key] = table[key]
    if out.get("snapshot") and runtime != "python":
        raise ConfigError(f"stoker.toml: snapshot = true is for Python functions; runtime '{runtime}' "
                          "starts as its own program. Remove snapshot, or set it to false")
    if "description" in table:
        _check("description", table["description"], isinstance(table["description"], str), "a string")
        out["description"] = table["description"]
    if "isolation" in table:
        _check("isolation", table["isolation"], table["isolation"] in ISOLATIONS,
               "one of " + ", ".join(ISOLATIONS))
        floor = os.environ.get("STOKER_ISOLATION", "auto") or "auto"
        if table["isolation"] == "process" and floor != "process":
            # the operator's isolation is the floor: a deployer cannot take a function out of its namespaces
            raise ConfigError(
                "stoker.toml: isolation = \"process\" asks for less isolation than this platform gives "
                f"(STOKER_ISOLATION={floor}): functions run in namespaces here. Remove the isolation line "
                "(or write \"namespace\"); only an operator can lower it, with STOKER_ISOLATION=process")
        out["isolation"] = table["isolation"]
    env = table.get("env", {})
    _check("env", env, isinstance(env, dict), "a table of NAME = \"value\"")
    for k, v in env.items():
        if not ENV_KEY_RE.match(k):
            raise ConfigError(f"stoker.toml: [function.env] {k!r} is not a valid variable name")
        if k.startswith("STOKER_") or k.startswith("AWS_LAMBDA_"):
            raise ConfigError(f"stoker.toml: [function.env] {k} is reserved for the platform; rename it")
        if not isinstance(v, str | int | float | bool):
            raise ConfigError(f"stoker.toml: [function.env] {k} must be a string, not {type(v).__name__}")
    out["env"] = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in env.items()}
    return out


def _validate_triggers(triggers: Any, folder: str | None) -> tuple[dict[str, Any], ...]:
    if not isinstance(triggers, list):
        raise ConfigError("stoker.toml: triggers must be written as [[triggers]] tables")
    out = []
    for i, raw in enumerate(triggers, 1):
        if not isinstance(raw, dict) or "type" not in raw:
            raise ConfigError(f"stoker.toml: trigger #{i} has no type: add type = \"...\"")
        kind = raw["type"]
        validator = TRIGGER_TYPES.get(kind)
        if validator is None:
            known = ", ".join(sorted(TRIGGER_TYPES)) or "none yet"
            raise ConfigError(f"stoker.toml: trigger #{i} has unknown type {kind!r}. Known types: {known}")
        body = {k: v for k, v in raw.items() if k != "type"}
        try:
            normalised = validator(body, folder)
        except ConfigError as e:
            raise ConfigError(f"stoker.toml: trigger #{i} ({kind}): {e.message}") from None
        out.append({"type": kind, **normalised})
    return tuple(out)


def parse_manifest(text: str, folder: str | None = None) -> FunctionSpec:
    """Parse and validate stoker.toml. `folder` resolves relative paths in triggers."""
    # the trigger modules register their types on import
    import stoker.triggers  # noqa: F401

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"stoker.toml is not valid TOML: {e}") from None
    for key in data:
        if key not in ("function", "triggers"):
            raise ConfigError(f"stoker.toml: unknown top-level key '{key}': use [function] and [[triggers]]")
    table = data.get("function")
    if not isinstance(table, dict):
        raise ConfigError("stoker.toml has no [function] table: add [function] with at least name = \"...\"")
    values = _validate_function(table)
    values["triggers"] = _validate_triggers(data.get("triggers", []), folder)
    return FunctionSpec(**values)
