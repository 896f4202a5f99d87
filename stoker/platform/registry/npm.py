"""A Node.js bundle's dependencies, installed at deploy time (never at cold start).

When the bundle's package.json lists dependencies, npm installs the production ones into
the bundle's node_modules: `npm ci` when there is a package-lock.json (or
npm-shrinkwrap.json), so the locked versions are exactly what runs, else `npm install`.
Command shims (node_modules/.bin) are not made: a bundle holds regular files only. npm is
STOKER_NPM if set, else `npm` on PATH, on the machine that deploys (the gateway).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from stoker.errors import BundleError
from stoker.platform.manifest import FunctionSpec
from stoker.platform.registry.installer import Progress, run_installer

NPM_TIMEOUT_S = 900
DEPENDENCY_KEYS = ("dependencies", "optionalDependencies", "bundleDependencies", "bundledDependencies")


def lists_dependencies(folder: Path) -> bool:
    package = folder / "package.json"
    if not package.is_file():
        return False
    try:
        data = json.loads(package.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"package.json is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise BundleError("package.json must hold a JSON object")
    return any(data.get(key) for key in DEPENDENCY_KEYS)


def npm_command(folder: Path) -> list[str]:
    npm = os.environ.get("STOKER_NPM") or shutil.which("npm")
    if not npm:
        raise BundleError("package.json lists dependencies, but npm is not installed where stoker deploys: "
                          "install Node.js with npm there (or set STOKER_NPM to the npm executable)")
    locked = (folder / "package-lock.json").is_file() or (folder / "npm-shrinkwrap.json").is_file()
    return [npm, "ci" if locked else "install", "--omit=dev", "--no-audit", "--no-fund", "--no-bin-links",
            "--install-links", "--loglevel=notice"]


def install_node_dependencies(folder: Path, spec: FunctionSpec, progress: Progress | None = None) -> bool:
    """BUILDERS["nodejs"]: install package.json's production dependencies. True if it ran npm."""
    if not lists_dependencies(folder):
        return False
    command = npm_command(folder)
    env = {**os.environ, "npm_config_update_notifier": "false", "NODE_ENV": "production"}
    try:
        result = run_installer(command, env=env, timeout=NPM_TIMEOUT_S, progress=progress, cwd=folder)
    except OSError as e:
        raise BundleError(f"could not run npm ({command[0]}): {e}") from None
    if result.timed_out:
        raise BundleError(f"npm {command[1]} did not finish within {NPM_TIMEOUT_S} s")
    if result.returncode != 0:
        raise BundleError(f"installing package.json dependencies (npm {command[1]} --omit=dev) failed:\n"
                          + "\n".join(result.tail(12)))
    return True
