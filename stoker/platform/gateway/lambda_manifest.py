"""Zips from the Lambda API get a stoker.toml: the manifest is made from the request.

CreateFunction sends code without a manifest, and function settings (FunctionName,
Runtime, Handler, MemorySize, Timeout, Environment, Description) beside it. Stoker
writes those as a `stoker.toml` and adds it to the zip before the usual deploy, so a
function made through the Lambda API is a function like any other. A zip that has its
own stoker.toml keeps it; the request may then not contradict it.

UpdateFunctionCode reuses the newest version's settings; UpdateFunctionConfiguration
rewrites the manifest of the newest version's bundle.
"""

from __future__ import annotations

import io
import re
import tomllib
import zipfile
from typing import Any

from stoker.errors import BundleError, ConfigError, InvalidInput
from stoker.platform.manifest import FunctionSpec
from stoker.platform.registry.bundles import MANIFEST

#: Lambda request fields -> [function] keys
SETTINGS = {"Handler": "handler", "MemorySize": "memory", "Timeout": "timeout", "Description": "description"}
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def stoker_runtime(runtime: str) -> str:
    """python3.12 -> python, nodejs20.x -> nodejs, provided.al2023 -> provided."""
    for prefix, ours in (("python3", "python"), ("nodejs", "nodejs"), ("provided", "provided")):
        if runtime.startswith(prefix):
            return ours
    raise ConfigError(f"Runtime {runtime!r} is not supported: use python3.x, nodejs*.x or provided.al2023")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ConfigError(f"{value} cannot be written to stoker.toml")
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"{value!r} cannot be written to stoker.toml")


def manifest_text(function: dict[str, Any], triggers: list[dict[str, Any]]) -> str:
    """A stoker.toml for these [function] settings and [[triggers]]."""
    lines = ["# written by stoker from a Lambda API request", "[function]"]
    env = function.get("env") or {}
    for key, value in function.items():
        if key == "env" or value is None:
            continue
        lines.append(f"{_toml_key(key)} = {toml_value(value)}")
    if env:
        lines.append("[function.env]")
        lines.extend(f"{_toml_key(k)} = {toml_value(str(v))}" for k, v in env.items())
    for trigger in triggers:
        lines.append("")
        lines.append("[[triggers]]")
        lines.extend(f"{_toml_key(k)} = {toml_value(v)}" for k, v in trigger.items())
    return "\n".join(lines) + "\n"


def spec_settings(spec: FunctionSpec) -> dict[str, Any]:
    """A deployed version's [function] settings, as a manifest would write them."""
    data = spec.to_json()
    data.pop("triggers", None)
    return {k: v for k, v in data.items() if v is not None}


def request_settings(body: dict[str, Any]) -> dict[str, Any]:
    """The [function] settings a CreateFunction/UpdateFunctionConfiguration request gives."""
    out: dict[str, Any] = {}
    if body.get("Runtime") is not None:
        if not isinstance(body["Runtime"], str):
            raise InvalidInput("Runtime must be a string such as python3.12")
        out["runtime"] = stoker_runtime(body["Runtime"])
    for field, key in SETTINGS.items():
        if body.get(field) is not None:
            out[key] = body[field]
    environment = body.get("Environment")
    if environment is not None:
        variables = environment.get("Variables") if isinstance(environment, dict) else None
        if not isinstance(variables, dict):
            raise InvalidInput('Environment must be {"Variables": {"NAME": "value"}}')
        out["env"] = {str(k): v for k, v in variables.items()}
    return out


def zip_manifest(data: bytes) -> str | None:
    """The zip's own stoker.toml, if it has one (read without unpacking anything else)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            try:
                info = zf.getinfo(MANIFEST)
            except KeyError:
                return None
            if info.file_size > 1024 * 1024:
                raise BundleError(f"{MANIFEST} in the zip is larger than 1 MB")
            with zf.open(info) as f:
                return f.read(1024 * 1024 + 1).decode("utf-8", "replace")
    except (zipfile.BadZipFile, ValueError, OSError):
        raise InvalidInput("Code.ZipFile is not a zip file") from None


def check_agrees(manifest: str, name: str, settings: dict[str, Any]) -> None:
    """A zip's own manifest must name the function and not contradict the request."""
    try:
        table = tomllib.loads(manifest).get("function") or {}
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"the zip's {MANIFEST} is not valid TOML: {e}") from None
    if table.get("name") != name:
        raise InvalidInput(f"the zip's {MANIFEST} names function {table.get('name')!r}, not {name!r}")
    defaults = FunctionSpec(name=name)
    for key, value in settings.items():
        theirs = table.get(key, getattr(defaults, key, None))
        if key == "env":
            theirs = {k: str(v) for k, v in (theirs or {}).items()}
            value = {k: str(v) for k, v in value.items()}
        if theirs != value:
            raise InvalidInput(f"the request sets {key} = {value!r} but the zip's {MANIFEST} says {theirs!r}: "
                               f"change one of them (the zip's {MANIFEST} is the function's manifest)")


def add_manifest(data: bytes, manifest: str) -> bytes:
    """The zip with stoker.toml appended (other entries are left as they are, never inflated here)."""
    buf = io.BytesIO(data)
    try:
        with zipfile.ZipFile(buf, "a", zipfile.ZIP_DEFLATED) as zf:
            info = zipfile.ZipInfo(MANIFEST, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, manifest.encode("utf-8"))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise InvalidInput("Code.ZipFile is not a zip file") from None
    return buf.getvalue()


def replace_manifest(data: bytes, manifest: str) -> bytes:
    """A stored (already checked) bundle with its stoker.toml replaced."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            if info.filename != MANIFEST:
                zout.writestr(info, zin.read(info))
        entry = zipfile.ZipInfo(MANIFEST, date_time=(1980, 1, 1, 0, 0, 0))
        entry.external_attr = 0o100644 << 16
        entry.compress_type = zipfile.ZIP_DEFLATED
        zout.writestr(entry, manifest.encode("utf-8"))
    return out.getvalue()
