"""The `[[triggers]] type = "files"` table, checked at deploy, and which files it wants.

    [[triggers]]
    type = "files"
    path = "inbox"             # the folder to watch; relative to the manifest's folder
    pattern = "*.csv"          # glob (or a list of globs) on the file name, default "*";
                               # a pattern with a '/' matches the path below the folder
    recursive = false          # watch sub-folders too
    on_success = "keep"        # keep | delete | move:FOLDER (relative: to the manifest's folder)
    on_failure = "keep"        # the same, applied after the function's last retry
    poll = false               # poll instead of inotify (network file systems)
    settle = 2.0               # seconds a file's size must hold still when no close or rename says it is whole
    qualifier = "prod"         # optional: the version or alias to invoke (default $LATEST)

Relative paths need the folder the function was deployed from: `stoker deploy FOLDER`
and `stoker up --deploy FOLDER` send it along (the `source_dir` of the deploy API) and
the deploy stores absolute paths. A deploy of zip bytes without it must use absolute paths.

Folders inside the function's folder that a files trigger watches or moves files to are
left out of its bundle: they hold data, not code.

Hidden and temporary files (`.*`, `*.tmp`, `*.part`, `*~`) are ignored unless a pattern
names them (e.g. pattern = "*.part"); so are files in hidden folders.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from stoker.errors import ConfigError

KEYS = ("path", "pattern", "recursive", "on_success", "on_failure", "poll", "settle", "qualifier")
ACTIONS = "keep, delete, or move:FOLDER"
#: suffixes of files still being written by common tools; "." prefixes hidden ones
TEMP_SUFFIXES = (".tmp", ".part", "~")


def _absolute(value: str, folder: str | None, key: str) -> str:
    expanded = os.path.expanduser(value)
    if os.path.isabs(expanded):
        return os.path.normpath(expanded)
    if folder is None:
        raise ConfigError(
            f"{key} \"{value}\" is relative, but this deploy does not say which folder it came from: "
            "write an absolute path, or deploy the function's folder with `stoker deploy FOLDER`")
    return os.path.normpath(os.path.join(folder, expanded))


def _action(value: Any, key: str, folder: str | None) -> str:
    if value in ("keep", "delete"):
        return str(value)
    if isinstance(value, str) and value.startswith("move:") and value[5:].strip():
        return "move:" + _absolute(value[5:].strip(), folder, key)
    raise ConfigError(f"{key} = {value!r} is not valid: use {ACTIONS}")


def _patterns(value: Any) -> list[str]:
    patterns = [value] if isinstance(value, str) else value
    if not isinstance(patterns, list) or not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ConfigError(f"pattern = {value!r} is not valid: give a glob such as \"*.csv\", or a list of them")
    return list(patterns)


def _inside_platform_home(path: str) -> bool:
    from stoker.settings import Settings

    try:
        home = str(Settings.from_env().home)
    except ConfigError:
        return False
    return path == home or path.startswith(home.rstrip(os.sep) + os.sep)


def validate(table: dict[str, Any], folder: str | None) -> dict[str, Any]:
    for key in table:
        if key not in KEYS:
            raise ConfigError(f"unknown key '{key}'. Known keys: {', '.join(KEYS)}")
    if "path" not in table or not isinstance(table["path"], str) or not table["path"].strip():
        raise ConfigError("no path: add path = \"inbox\" (the folder to watch)")
    path = _absolute(table["path"].strip(), folder, "path")
    if path == os.sep:
        raise ConfigError("path \"/\" would watch the whole file system: name the folder files are dropped in")
    if _inside_platform_home(path):
        raise ConfigError(f"path \"{path}\" is inside stoker's own data directory: watch another folder")
    out: dict[str, Any] = {"path": path, "pattern": _patterns(table.get("pattern", "*"))}
    for key in ("recursive", "poll"):
        value = table.get(key, False)
        if not isinstance(value, bool):
            raise ConfigError(f"{key} = {value!r} is not valid: true or false")
        out[key] = value
    for key in ("on_success", "on_failure"):
        out[key] = _action(table.get(key, "keep"), key, folder)
        if out[key] == f"move:{path}":
            raise ConfigError(f"{key} moves files into the folder they came from ({path}): name another folder")
    settle = table.get("settle", 2.0)
    if not isinstance(settle, int | float) or isinstance(settle, bool) or not 0.05 <= settle <= 3600:
        raise ConfigError(f"settle = {settle!r} is not valid: a number of seconds from 0.05 to 3600")
    out["settle"] = float(settle)
    if "qualifier" in table:
        qualifier = table["qualifier"]
        if not isinstance(qualifier, str) or not qualifier:
            raise ConfigError(f"qualifier = {qualifier!r} is not valid: give a version number or an alias name")
        out["qualifier"] = qualifier
    return out


def data_folders(function_folder: Path) -> tuple[Path, ...]:
    """Folders inside a function's folder that its files triggers watch or move files to:
    data, never packed into the bundle (nor changing its code hash)."""
    try:
        manifest = tomllib.loads((function_folder / "stoker.toml").read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return ()  # the deploy reports a broken manifest itself
    root = function_folder.resolve()
    out = []
    for trigger in manifest.get("triggers") or []:
        if not isinstance(trigger, dict) or trigger.get("type") != "files":
            continue
        paths = [trigger.get("path")] + [trigger.get(k, "")[5:] for k in ("on_success", "on_failure")
                                         if isinstance(trigger.get(k), str) and trigger[k].startswith("move:")]
        for value in paths:
            if isinstance(value, str) and value.strip():
                target = (root / os.path.expanduser(value.strip())).resolve()
                if root in target.parents:
                    out.append(target)
    return tuple(out)


def _temporary_kind(name: str) -> str | None:
    if name.startswith("."):
        return "."
    for suffix in TEMP_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def _names_kind(pattern: str, kind: str) -> bool:
    last = pattern.rsplit("/", 1)[-1]
    return last.startswith(".") if kind == "." else last.endswith(kind)


@dataclass(frozen=True)
class FilesConfig:
    """A deployed files trigger."""

    function: str
    folder: str
    patterns: tuple[str, ...]
    recursive: bool
    on_success: str
    on_failure: str
    poll: bool
    settle: float
    qualifier: str | None

    @classmethod
    def from_trigger(cls, function: str, config: dict[str, Any]) -> FilesConfig:
        return cls(
            function=function,
            folder=str(config["path"]),
            patterns=tuple(config.get("pattern") or ["*"]),
            recursive=bool(config.get("recursive", False)),
            on_success=str(config.get("on_success", "keep")),
            on_failure=str(config.get("on_failure", "keep")),
            poll=bool(config.get("poll", False)),
            settle=float(config.get("settle", 2.0)),
            qualifier=str(config["qualifier"]) if config.get("qualifier") else None,
        )

    @property
    def folder_id(self) -> str:
        """Names the folder in Redis keys: the processed record is per function and folder."""
        return hashlib.sha256(self.folder.encode()).hexdigest()[:16]

    @property
    def bucket(self) -> str:
        """The S3 `bucket.name` of its events: the folder's own name."""
        return os.path.basename(self.folder.rstrip(os.sep)) or self.folder

    @property
    def excluded(self) -> tuple[str, ...]:
        """Move targets inside the watched folder, never watched (processed files land there)."""
        out = []
        for action in (self.on_success, self.on_failure):
            if action.startswith("move:"):
                target = action[5:]
                if target.startswith(self.folder.rstrip(os.sep) + os.sep):
                    out.append(target)
        return tuple(out)

    def relative(self, path: str) -> str | None:
        """The path below the watched folder (posix), or None when it is not one to consider."""
        root = self.folder.rstrip(os.sep) + os.sep
        if not path.startswith(root):
            return None
        for excluded in self.excluded:
            if path == excluded or path.startswith(excluded.rstrip(os.sep) + os.sep):
                return None
        rel = path[len(root):]
        parts = rel.split(os.sep)
        if len(parts) > 1 and not self.recursive:
            return None
        if any(part.startswith(".") for part in parts[:-1]):
            return None  # inside a hidden folder
        return PurePosixPath(*parts).as_posix()

    def wants(self, rel: str) -> bool:
        """Whether a file (its path below the folder) fires this trigger."""
        name = rel.rsplit("/", 1)[-1]
        kind = _temporary_kind(name)
        for pattern in self.patterns:
            subject = rel if "/" in pattern else name
            if fnmatch.fnmatchcase(subject, pattern) and (kind is None or _names_kind(pattern, kind)):
                return True
        return False
