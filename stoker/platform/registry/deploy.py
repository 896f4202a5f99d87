"""Deploying: check a bundle, build it (dependencies installed now, never at cold start),
store it by content, record a version, and project the function for the hot path.

Deploy never imports user code: a handler that cannot be imported is reported when it
is invoked (`Runtime.ImportModuleError`), as on Lambda.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stoker.errors import BundleError, ConfigError, NotFound
from stoker.platform.context import PlatformContext
from stoker.platform.manifest import FunctionSpec, parse_manifest
from stoker.platform.registry import projection
from stoker.platform.registry.bundles import (
    BundleInfo,
    extract_bundle,
    inspect_bundle,
    pack_directory,
)
from stoker.platform.registry.gc import bundle_claim
from stoker.platform.registry.installer import Progress, run_installer
from stoker.platform.registry.npm import install_node_dependencies
from stoker.platform.registry.requirements import (
    SOURCE_BUILD_HINT,
    check_requirements,
    pip_environment,
    pip_policy_arguments,
)
from stoker.platform.registry.store import FunctionState, RegistryStore

#: hooks that build a runtime's dependencies into an unpacked bundle (e.g. npm for nodejs), called as
#: hook(folder, spec, progress); each returns True when it changed the folder
BUILDERS: dict[str, Any] = {"nodejs": install_node_dependencies}


@dataclass(frozen=True)
class DeployResult:
    function: str
    version: int
    created: bool
    code_hash: str

    def to_json(self) -> dict[str, Any]:
        return {"function": self.function, "version": str(self.version), "created": self.created,
                "code_hash": self.code_hash}

    def describe(self) -> str:
        if self.created:
            return f"deployed {self.function}: version {self.version}"
        return f"{self.function} is unchanged: version {self.version} already has this code and configuration"


def _python_module_present(files: tuple[str, ...], handler: str) -> bool:
    module = handler.rsplit(".", 1)[0].replace(".", "/")
    return f"{module}.py" in files or f"{module}/__init__.py" in files or any(
        f.startswith(f"{module}.") and f.endswith((".so", ".pyc")) for f in files)


def check_handler_present(spec: FunctionSpec, files: tuple[str, ...]) -> None:
    if spec.runtime == "python" and not _python_module_present(files, spec.handler):
        module = spec.handler.rsplit(".", 1)[0]
        raise BundleError(
            f"the bundle has no module {module!r} for handler {spec.handler!r}: add "
            f"{module.replace('.', '/')}.py, or set handler = \"module.function\" in stoker.toml")
    if spec.runtime == "provided" and "bootstrap" not in files:
        raise BundleError("runtime \"provided\" needs an executable file named bootstrap at the bundle's top level")
    if spec.runtime == "nodejs":
        base = spec.handler.rsplit(".", 1)[0]
        if not any(f"{base}{ext}" in files for ext in (".js", ".mjs", ".cjs")):
            raise BundleError(f"the bundle has no {base}.js, {base}.mjs or {base}.cjs for handler {spec.handler!r}")


#: the most installer output kept for an error message
ERROR_TAIL_LINES = 8
PIP_TIMEOUT_S = 900


def _install_requirements(folder: Path, progress: Progress | None = None) -> None:
    requirements = folder / "requirements.txt"
    check_requirements(requirements.read_text(errors="replace"))
    with tempfile.TemporaryDirectory(prefix="stoker-pip-") as pip_home:
        result = run_installer(
            [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
             "--progress-bar", "off", *pip_policy_arguments(), "--target", str(folder), "-r", str(requirements)],
            env=pip_environment(pip_home), timeout=PIP_TIMEOUT_S, progress=progress)
    if result.returncode != 0:
        stopped = [f"pip was stopped after {PIP_TIMEOUT_S} s"] if result.timed_out else []
        raise BundleError("installing requirements.txt failed:\n" + "\n".join(
            [*result.tail(ERROR_TAIL_LINES), *stopped, *install_hints(result.output)]))


_NOT_FOUND = re.compile(r"No matching distribution found for (\S+)")


def install_hints(output: list[str]) -> list[str]:
    """What to do about a failed install; the wheels-only policy is named only where it may be why."""
    missing = [m.group(1) for line in output if (m := _NOT_FOUND.search(line))]
    if not missing:
        return []
    names = ", ".join(dict.fromkeys(missing))
    hint = (f"{names}: no installable distribution was found. Check the name and version (pip index versions "
            "NAME shows what exists)")
    if pip_policy_arguments():
        hint += f"; if it exists only as a source distribution: {SOURCE_BUILD_HINT}"
    return [hint]


def build_bundle(data: bytes, info: BundleInfo, spec: FunctionSpec, progress: Progress | None = None) -> bytes:
    """The bundle as stored: the upload, plus dependencies installed at deploy time."""
    needs_pip = spec.runtime == "python" and "requirements.txt" in info.files
    builder = BUILDERS.get(spec.runtime)
    if not needs_pip and builder is None:
        return data
    with tempfile.TemporaryDirectory(prefix="stoker-build-") as tmp:
        folder = Path(tmp) / "bundle"
        extract_bundle(data, folder)
        changed = False
        if needs_pip:
            _install_requirements(folder, progress)
            changed = True
        if builder is not None:
            changed = bool(builder(folder, spec, progress)) or changed
        return pack_directory(folder) if changed else data


@dataclass(frozen=True)
class CheckedBundle:
    """A bundle that passed every check a deploy makes before it builds anything."""

    data: bytes
    info: BundleInfo
    spec: FunctionSpec


async def check_bundle(ctx: PlatformContext, data: bytes, source_dir: str | None = None) -> CheckedBundle:
    """The checks of a deploy that change nothing: the zip, the manifest, the handler, the bindings."""
    info = await asyncio.to_thread(inspect_bundle, data)
    spec = parse_manifest(info.manifest_text, source_dir)
    check_handler_present(spec, info.files)
    await asyncio.to_thread(check_trigger_qualifiers, spec, ctx.require_registry())
    return CheckedBundle(data, info, spec)


async def deploy_bundle(ctx: PlatformContext, data: bytes | CheckedBundle, deployed_by: str | None = None,
                        source_dir: str | None = None, progress: Progress | None = None) -> DeployResult:
    """Deploy a bundle (or one check_bundle passed). `source_dir` is the absolute folder it was
    deployed from (the function's folder, or the folder holding the zip): relative paths in its
    triggers resolve against it. `progress` gets the dependency installer's output as it comes
    (called from a worker thread)."""
    checked = data if isinstance(data, CheckedBundle) else await check_bundle(ctx, data, source_dir)
    info, spec = checked.info, checked.spec
    registry = ctx.require_registry()
    assert ctx.bundles is not None
    async with bundle_claim(ctx.redis, ctx.keys, info.code_hash):  # no collection removes it meanwhile
        if not ctx.bundles.has(info.code_hash):
            built = await asyncio.to_thread(build_bundle, checked.data, info, spec, progress)
            if spec.runtime == "python" and "requirements.txt" in info.files:
                built_info = await asyncio.to_thread(inspect_bundle, built)
                check_handler_present(spec, built_info.files)
            await asyncio.to_thread(ctx.bundles.put, info.code_hash, built)
        version, created = await asyncio.to_thread(registry.record_deploy, spec, info.code_hash, deployed_by)
    state = await asyncio.to_thread(registry.state, spec.name)
    await projection.publish(ctx.redis, ctx.keys, state)
    ctx.directory.forget(spec.name)
    return DeployResult(function=spec.name, version=version, created=created, code_hash=info.code_hash)


def check_trigger_qualifiers(spec: FunctionSpec, registry: RegistryStore) -> None:
    """A trigger bound to an alias or version that does not exist is refused before anything changes
    (it would answer 404 or fail every event): create the alias first, then deploy the binding."""
    bound = [(i, t) for i, t in enumerate(spec.triggers, start=1) if t.get("qualifier") not in (None, "$LATEST")]
    if not bound:
        return
    try:
        state: FunctionState | None = registry.state(spec.name)
    except NotFound:
        state = None
    for i, trigger in bound:
        qualifier = str(trigger["qualifier"])
        where = f"stoker.toml: trigger #{i} ({trigger.get('type')}) has qualifier = {qualifier!r}"
        if qualifier.isdigit():
            # the version this deploy makes is latest + 1 at most
            newest = (state.latest if state else 0) + 1
            if int(qualifier) != newest and (state is None or int(qualifier) not in state.versions):
                raise ConfigError(f"{where}, but {spec.name} has no version {qualifier}: bind an existing "
                                  f"version (see `stoker versions {spec.name}`), an alias, or remove qualifier "
                                  "to use $LATEST")
        elif state is None or qualifier not in state.aliases:
            first = " (a first deploy: deploy without qualifier, then create the alias)" if state is None else ""
            raise ConfigError(f"{where}, but {spec.name} has no alias {qualifier!r}{first}: create it with "
                              f"`stoker alias set {spec.name} {qualifier} VERSION`, or remove qualifier to use "
                              "$LATEST")


async def deploy_path(ctx: PlatformContext, path: Path, deployed_by: str | None = None) -> DeployResult:
    """Deploy a folder (with stoker.toml) or a zip file from the local disk."""
    data = await asyncio.to_thread(read_deployable, path)
    return await deploy_bundle(ctx, data, deployed_by, source_dir=source_folder(path))


def source_folder(path: Path) -> str:
    """The folder relative trigger paths resolve against: the function folder, or the zip's folder."""
    resolved = path.resolve()
    return str(resolved if resolved.is_dir() else resolved.parent)


def read_deployable(path: Path) -> bytes:
    """The bytes to upload for a folder or zip, with the checks a user needs to hear about first."""
    if path.is_dir():
        if not (path / "stoker.toml").is_file():
            raise BundleError(
                f"{path} has no stoker.toml: a function folder needs a manifest with a [function] table "
                "(name = \"...\", handler = \"module.function\")")
        from stoker.triggers.files.config import data_folders

        return pack_directory(path, exclude=data_folders(path))
    if path.is_file():
        return path.read_bytes()
    raise BundleError(f"{path} does not exist: give a function folder or a .zip")


async def sync_projection(ctx: PlatformContext) -> int:
    """Rebuild the whole Redis projection from SQL (at start, or after Redis lost data)."""
    registry = ctx.require_registry()
    states = await asyncio.to_thread(registry.states)
    known = {s.name for s in states}
    for state in states:
        if state.versions:
            await projection.publish(ctx.redis, ctx.keys, state)
    for stale in set(await ctx.directory.names()) - known:
        await projection.unpublish(ctx.redis, ctx.keys, stale)
    return len(states)
