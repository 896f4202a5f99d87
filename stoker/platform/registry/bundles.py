"""Bundles: a function's code as a zip, checked, hashed, stored by content and unpacked safely.

A bundle is refused, with the offending entry named, when it is not a zip, when an
entry would land outside the bundle (`..`, absolute paths, backslashes), when it holds
links or device files, two entries for one path, a file where a folder must be, too many
files, more than 250 MB unpacked, or entries (or the whole) that inflate beyond a sane
ratio (zip bombs, including entries that overlap in the archive). Sizes are counted while
unpacking, from the bytes actually inflated, never trusted from the zip's directory.

Zip has no hard links: every entry unpacks to a new regular file, opened with O_EXCL and
O_NOFOLLOW under a folder that did not exist before, so nothing is ever written outside it.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from stoker.errors import BundleError, NotFound

MAX_UNPACKED = 250 * 1024 * 1024
MAX_ZIP = 100 * 1024 * 1024
MAX_FILES = 20_000
#: an entry may inflate at most this many times its compressed size, once it is big
MAX_RATIO = 200
RATIO_FLOOR = 1024 * 1024
#: the whole bundle may inflate at most MAX_RATIO times the zip's size, past this floor
#: (entries that share their compressed bytes each look sane; their sum does not)
TOTAL_RATIO_FLOOR = 16 * 1024 * 1024
MAX_NAME = 1024
MAX_NAME_PART = 255
MAX_MANIFEST = 256 * 1024
MANIFEST = "stoker.toml"
SKIPPED_DIRS = {"__pycache__", ".git", ".hg", ".svn", ".stoker", ".mypy_cache", ".pytest_cache",
                ".ruff_cache"}


@dataclass(frozen=True)
class BundleInfo:
    code_hash: str
    manifest_text: str
    files: tuple[str, ...]
    unpacked_size: int


def _entry_name_problem(name: str) -> str | None:
    if not name or "\x00" in name or not name.strip("/."):
        return "has an empty or invalid name"
    if "\\" in name:
        return "uses backslashes in its path"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return "has an absolute path"
    parts = PurePosixPath(name).parts
    if ".." in parts:
        return "climbs out of the bundle with '..'"
    if len(name) > MAX_NAME or any(len(p.encode()) > MAX_NAME_PART for p in parts):
        return f"has a name longer than {MAX_NAME} characters or a part longer than {MAX_NAME_PART} bytes"
    return None


def _normalised(name: str) -> str:
    """The path an entry lands on: `a//b`, `./a/b` and `a/b/` are one path."""
    return PurePosixPath(name).as_posix()


def _entry_kind_problem(info: zipfile.ZipInfo) -> str | None:
    mode = (info.external_attr >> 16) & 0xFFFF
    if not stat.S_IFMT(mode):
        return None  # no file type recorded (zips made on Windows, or by Python's writestr): a file or a folder
    if stat.S_ISLNK(mode):
        return "is a symbolic link (bundles may hold regular files only)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return "is a device, pipe or socket file"
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "is not a regular file"
    return None


def _open_zip(data: bytes) -> zipfile.ZipFile:
    if len(data) > MAX_ZIP:
        raise BundleError(f"the bundle is {len(data):,} bytes; at most {MAX_ZIP:,} bytes are accepted")
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError):
        raise BundleError("the bundle is not a zip file: deploy a folder or a .zip of one") from None


def _checked_entries(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    infos = zf.infolist()
    if len(infos) > MAX_FILES:
        raise BundleError(f"the bundle holds {len(infos):,} entries; at most {MAX_FILES:,} are accepted")
    seen: dict[str, bool] = {}  # normalised path -> is a folder
    for info in infos:
        problem = _entry_name_problem(info.filename) or _entry_kind_problem(info)
        if problem:
            raise BundleError(f"refused bundle: entry {info.filename!r} {problem}")
        key = _normalised(info.filename)
        if key in seen and not (seen[key] and info.is_dir()):
            raise BundleError(f"refused bundle: entry {info.filename!r} appears twice")
        seen[key] = info.is_dir()
    files = {k for k, is_dir in seen.items() if not is_dir}
    for key in seen:
        for parent in PurePosixPath(key).parents:
            if parent.as_posix() in files:
                raise BundleError(f"refused bundle: entry {key!r} is inside {parent.as_posix()!r}, which is a file")
    return infos


class _Budget:
    """What the whole bundle may still inflate to: 250 MB, and MAX_RATIO times the zip's size."""

    def __init__(self, zip_size: int) -> None:
        self.used = 0
        self.ratio_limit = max(TOTAL_RATIO_FLOOR, zip_size * MAX_RATIO)

    def spend(self, n: int, entry: str) -> None:
        self.used += n
        if self.used > MAX_UNPACKED:
            raise BundleError(f"refused bundle: it unpacks to more than {MAX_UNPACKED // (1024 * 1024)} MB "
                              f"(entry {entry!r})")
        if self.used > self.ratio_limit:
            raise BundleError(f"refused bundle: it inflates more than {MAX_RATIO} times its compressed size "
                              f"(at entry {entry!r}; a zip bomb?)")


def _inflate(zf: zipfile.ZipFile, info: zipfile.ZipInfo, budget: _Budget) -> Iterator[bytes]:
    """The entry's bytes in chunks, stopping as soon as a limit is crossed."""
    total = 0
    ratio_limit = max(RATIO_FLOOR, info.compress_size * MAX_RATIO)
    try:
        with zf.open(info) as f:
            while chunk := f.read(1024 * 1024):
                total += len(chunk)
                budget.spend(len(chunk), info.filename)
                if total > ratio_limit:
                    raise BundleError(
                        f"refused bundle: entry {info.filename!r} inflates more than {MAX_RATIO} times "
                        "its compressed size (a zip bomb?)")
                yield chunk
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as e:
        raise BundleError(f"refused bundle: entry {info.filename!r} cannot be read: {e}") from None


def inspect_bundle(data: bytes) -> BundleInfo:
    """Check every entry (inflating it, within limits) and compute the content hash.

    The hash covers each file's path, executable bit and content, so it changes exactly
    when code or configuration changes, whatever the zip's timestamps or order.
    """
    with _open_zip(data) as zf:
        infos = _checked_entries(zf)
        files: list[tuple[str, str, bool]] = []
        manifest: bytes | None = None
        budget = _Budget(len(data))
        for info in infos:
            if info.is_dir():
                continue
            h = hashlib.sha256()
            chunks = []
            is_manifest = _normalised(info.filename) == MANIFEST
            for chunk in _inflate(zf, info, budget):
                h.update(chunk)
                if is_manifest:
                    chunks.append(chunk)
                    if sum(map(len, chunks)) > MAX_MANIFEST:
                        raise BundleError(f"refused bundle: {MANIFEST} is over {MAX_MANIFEST // 1024} KB")
            if is_manifest:
                manifest = b"".join(chunks)
            executable = bool((info.external_attr >> 16) & 0o111)
            files.append((info.filename, h.hexdigest(), executable))
    if manifest is None:
        raise BundleError(f"the bundle has no {MANIFEST} at its top level: add one with a [function] table")
    try:
        manifest_text = manifest.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"{MANIFEST} is not UTF-8 text") from None
    files.sort()
    digest = hashlib.sha256()
    for name, file_hash, executable in files:
        digest.update(f"{name}\0{file_hash}\0{int(executable)}\n".encode())
    return BundleInfo(code_hash=digest.hexdigest(), manifest_text=manifest_text,
                      files=tuple(f[0] for f in files), unpacked_size=budget.used)


def extract_bundle(data: bytes, dest: Path) -> None:
    """Unpack into `dest` (which must not exist), never writing outside it."""
    dest.mkdir(parents=True, exist_ok=False)
    root = dest.resolve()
    with _open_zip(data) as zf:
        budget = _Budget(len(data))
        for info in _checked_entries(zf):
            target = (root / _normalised(info.filename)).resolve()
            if target != root and root not in target.parents:
                raise BundleError(f"refused bundle: entry {info.filename!r} would land outside the bundle")
            try:
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
                with os.fdopen(fd, "wb") as out:
                    for chunk in _inflate(zf, info, budget):
                        out.write(chunk)
                os.chmod(target, mode)
            except OSError as e:
                raise BundleError(f"refused bundle: entry {info.filename!r} cannot be unpacked: {e.strerror}") from None


def _is_npm_command_shim(path: Path) -> bool:
    return path.parent.name == ".bin" and path.parent.parent.name == "node_modules"


def pack_directory(folder: Path, exclude: tuple[Path, ...] = ()) -> bytes:
    """Zip a function folder deterministically. Links are refused: a bundle holds files only
    (except npm's command shims in node_modules/.bin, which are skipped).

    `exclude` names sub-folders left out (data folders, such as a files trigger's inbox).
    """
    folder = folder.resolve()
    if not folder.is_dir():
        raise BundleError(f"{folder} is not a folder")
    skipped = {p.resolve() for p in exclude}
    buf = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames
                                 if d not in SKIPPED_DIRS and Path(dirpath, d).resolve() not in skipped)
            for d in dirnames:
                if os.path.islink(os.path.join(dirpath, d)):
                    raise BundleError(f"{os.path.join(dirpath, d)} is a symbolic link: bundles hold files only")
            for name in sorted(filenames):
                path = Path(dirpath) / name
                if name.endswith((".pyc", ".pyo")):
                    continue
                st = path.lstat()
                if stat.S_ISLNK(st.st_mode) and _is_npm_command_shim(path):
                    continue  # npm's links to package commands: never loaded by code, and npm rebuilds them
                if stat.S_ISLNK(st.st_mode):
                    raise BundleError(f"{path} is a symbolic link: bundles hold files only; copy the file in")
                if not stat.S_ISREG(st.st_mode):
                    raise BundleError(f"{path} is not a regular file")
                total += st.st_size
                if total > MAX_UNPACKED:
                    raise BundleError(f"{folder} holds more than {MAX_UNPACKED // (1024 * 1024)} MB")
                rel = path.relative_to(folder).as_posix()
                info = zipfile.ZipInfo(rel, date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = ((0o755 if st.st_mode & 0o111 else 0o644) | stat.S_IFREG) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
    return buf.getvalue()


class BundleStore:
    """Built bundles (zips) by content hash, in a local directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, code_hash: str) -> Path:
        if not all(c in "0123456789abcdef" for c in code_hash) or len(code_hash) != 64:
            raise NotFound(f"no bundle {code_hash!r}")
        return self.root / f"{code_hash}.zip"

    def has(self, code_hash: str) -> bool:
        return self.path(code_hash).exists()

    def put(self, code_hash: str, data: bytes) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self.path(code_hash)
        if target.exists():
            return
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".upload-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)

    def get(self, code_hash: str) -> bytes:
        try:
            return self.path(code_hash).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no bundle with hash {code_hash}") from None

    def delete(self, code_hash: str) -> None:
        self.path(code_hash).unlink(missing_ok=True)

    def hashes(self) -> set[str]:
        if not self.root.exists():
            return set()
        return {p.stem for p in self.root.glob("*.zip")}


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def trash_bundle(store: BundleStore, code_hash: str) -> Path | None:
    """Move a bundle aside (atomically) before deciding to delete it; None if it is gone."""
    target = store.path(code_hash)
    trashed = store.root / f".trash-{code_hash}-{os.getpid()}"
    try:
        os.rename(target, trashed)
    except FileNotFoundError:
        return None
    return trashed


def restore_bundle(store: BundleStore, code_hash: str, trashed: Path) -> None:
    """Put a trashed bundle back (a deploy may have written the same content meanwhile: same bytes)."""
    os.replace(trashed, store.path(code_hash))
