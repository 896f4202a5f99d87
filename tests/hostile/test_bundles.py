"""A corpus of hostile bundles, built here: each is refused with a message naming what is
wrong, nothing is ever written outside the bundle's folder, and a deploy through the
platform changes nothing."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from stoker.errors import BundleError, ConfigError
from stoker.platform.manifest import parse_manifest
from stoker.platform.registry import bundles
from stoker.platform.registry.bundles import extract_bundle, inspect_bundle
from stoker.platform.registry.requirements import check_requirements
from tests.conftest import RunningPlatform

MANIFEST = '[function]\nname = "evil"\nhandler = "handler.handler"\n'
HANDLER = "def handler(e, c):\n    return 1\n"


def zip_of(*entries: tuple[str | zipfile.ZipInfo, bytes | str], manifest: str | bytes | None = MANIFEST,
           compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        if manifest is not None:
            zf.writestr("stoker.toml", manifest)
        zf.writestr("handler.py", HANDLER)
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def with_mode(name: str, mode: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info


def overlapping_bomb(copies: int = 400) -> bytes:
    """A simplified overlapping-entries bomb: many central-directory entries share one
    local file's compressed bytes, so each entry looks sane and together they are huge."""
    data = b"\0" * (1024 * 1024)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    packed = deflate.compress(data) + deflate.flush()
    crc = zlib.crc32(data)
    out = io.BytesIO()
    # stoker.toml and handler.py first, stored, so that the bundle is otherwise valid
    heads = []
    for name, body in (("stoker.toml", MANIFEST.encode()), ("handler.py", HANDLER.encode())):
        heads.append((name, out.tell(), body, 0, zlib.crc32(body), len(body)))
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0, zlib.crc32(body), len(body), len(body),
                              len(name), 0) + name.encode() + body)
    shared_at = out.tell()
    out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(packed), len(data), 5, 0)
              + b"zero0" + packed)
    central = io.BytesIO()
    count = 0
    for name, offset, _body, method, body_crc, size in heads:
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, body_crc, size, size,
                                  len(name), 0, 0, 0, 0, 0, offset) + name.encode())
        count += 1
    for i in range(copies):
        name = f"zero{i}".encode()
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(packed), len(data),
                                  len(name), 0, 0, 0, 0, 0, shared_at) + name)
        count += 1
    cd = central.getvalue()
    start = out.tell()
    out.write(cd)
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(cd), start, 0))
    return out.getvalue()


def encrypted_entry() -> bytes:
    raw = bytearray(zip_of(("secret.txt", "hidden")))
    # set the "encrypted" flag on secret.txt, in its local header and central directory entry
    for sig in (b"PK\x03\x04", b"PK\x01\x02"):
        at = 0
        while (at := raw.find(sig, at)) >= 0:
            name_len_at = at + (26 if sig == b"PK\x03\x04" else 28)
            name_at = at + (30 if sig == b"PK\x03\x04" else 46)
            n = struct.unpack_from("<H", raw, name_len_at)[0]
            if raw[name_at:name_at + n] == b"secret.txt":
                flag_at = at + (6 if sig == b"PK\x03\x04" else 8)
                struct.pack_into("<H", raw, flag_at, struct.unpack_from("<H", raw, flag_at)[0] | 1)
            at += 4
    return bytes(raw)


#: name -> (builder, a fragment the refusal must contain)
CORPUS: dict[str, tuple[Callable[[], bytes], str]] = {
    "slip": (lambda: zip_of(("../../escape-slip.txt", "x")), "'..'"),
    "deep-slip": (lambda: zip_of(("../" * 30 + "tmp/escape-deep.txt", "x")), "'..'"),
    "inner-slip": (lambda: zip_of(("lib/../../escape-inner.txt", "x")), "'..'"),
    "absolute": (lambda: zip_of(("/tmp/escape-abs.txt", "x")), "absolute path"),
    "drive": (lambda: zip_of(("C:/escape.txt", "x")), "absolute path"),
    "backslash": (lambda: zip_of(("..\\..\\escape-win.txt", "x")), "backslashes"),
    "dot-only": (lambda: zip_of(("./", "")), "invalid name"),
    "long-name": (lambda: zip_of(("x" * 300 + ".py", "x")), "longer than"),
    "symlink": (lambda: zip_of((with_mode("link", stat.S_IFLNK | 0o777), "/etc/passwd")), "symbolic link"),
    "symlink-dir": (lambda: zip_of((with_mode("lib/", stat.S_IFLNK | 0o777), "/")), "symbolic link"),
    "char-device": (lambda: zip_of((with_mode("tty", stat.S_IFCHR | 0o666), "")), "device"),
    "block-device": (lambda: zip_of((with_mode("disk", stat.S_IFBLK | 0o666), "")), "device"),
    "fifo": (lambda: zip_of((with_mode("pipe", stat.S_IFIFO | 0o666), "")), "device, pipe or socket"),
    "socket": (lambda: zip_of((with_mode("sock", stat.S_IFSOCK | 0o666), "")), "device, pipe or socket"),
    "unknown-type": (lambda: zip_of((with_mode("odd", 0o170000 | 0o644), "")), "not a regular file"),
    "duplicate": (lambda: zip_of(("handler.py", "def handler(e, c):\n    return 2\n")), "appears twice"),
    "duplicate-normalised": (lambda: zip_of(("lib/a.py", "1"), ("lib//a.py", "2")), "appears twice"),
    "file-then-dir": (lambda: zip_of(("lib", "a file"), ("lib/a.py", "x")), "which is a file"),
    "bomb": (lambda: zip_of(("zeros.bin", b"\0" * (64 * 1024 * 1024))), "zip bomb"),
    # each entry under the per-entry bound, together far beyond the whole bundle's
    "many-small-bombs": (lambda: zip_of(*[(f"z{i}.bin", b"\0" * (1024 * 1024)) for i in range(24)]), "zip bomb"),
    # entries that share one local file (Python's reader refuses them: the names differ)
    "overlapping": (overlapping_bomb, "cannot be read"),
    "not-a-zip": (lambda: b"this is not a zip file", "not a zip file"),
    "empty": (lambda: b"", "not a zip file"),
    "truncated": (lambda: zip_of(("data.bin", os.urandom(4096)))[:-200], "not a zip file"),
    "encrypted": (encrypted_entry, "cannot be read"),
    "no-manifest": (lambda: zip_of(manifest=None), "no stoker.toml"),
    "manifest-not-utf8": (lambda: zip_of(manifest=b'[function]\nname = "\xff"\n'), "stoker.toml is not UTF-8"),
    "huge-manifest": (lambda: zip_of(manifest=MANIFEST + "#" * (300 * 1024)), "stoker.toml is over"),
}

MANIFEST_PROBLEMS = {"no-manifest", "manifest-not-utf8", "huge-manifest"}

#: refused when their manifest is parsed (after the zip itself passed)
BAD_MANIFESTS = {
    "not-toml": ("[function\nname = evil", "not valid TOML"),
    "no-function-table": ('name = "evil"\n', "unknown top-level key"),
    "reserved-env": (MANIFEST + '[function.env]\nSTOKER_TOKEN = "x"\n', "reserved"),
    "bad-isolation": (MANIFEST + 'isolation = "vm"\n', "isolation"),
}


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_zip_is_refused_and_writes_nothing_outside(name: str, tmp_path: Path) -> None:
    build, reason = CORPUS[name]
    data = build()
    with pytest.raises(BundleError) as refused:
        inspect_bundle(data)
    assert reason in refused.value.message, refused.value.message
    # unpacking (as the node and the build step do) refuses too, and writes nowhere else
    nest = tmp_path / "a" / "b" / "c"
    nest.mkdir(parents=True)
    if name in MANIFEST_PROBLEMS:  # the entries themselves are fine: unpacking may go ahead
        extract_bundle(data, nest / "bundle")
    else:
        with pytest.raises(BundleError):
            extract_bundle(data, nest / "bundle")
    outside = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if "bundle" not in p.parts)
    assert outside == ["a", "a/b", "a/b/c"], outside
    assert not list(Path("/tmp").glob("escape-*"))


def test_the_size_and_count_limits_are_checked_while_inflating(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundles, "MAX_UNPACKED", 2 * 1024 * 1024)
    data = zip_of(("a.bin", os.urandom(1536 * 1024)), ("b.bin", os.urandom(1536 * 1024)))
    with pytest.raises(BundleError, match="unpacks to more than 2 MB"):
        inspect_bundle(data)
    monkeypatch.setattr(bundles, "MAX_FILES", 10)
    with pytest.raises(BundleError, match="at most 10 are accepted"):
        inspect_bundle(zip_of(*[(f"f{i}.py", "") for i in range(10)]))


def test_a_sane_bundle_still_unpacks(tmp_path: Path) -> None:
    data = zip_of(("lib/", ""), ("lib/util.py", "X = 1\n"), ("./data/a.json", "{}"))
    info = inspect_bundle(data)
    assert set(info.files) == {"stoker.toml", "handler.py", "lib/util.py", "./data/a.json"}
    extract_bundle(data, tmp_path / "b")
    assert (tmp_path / "b" / "lib" / "util.py").read_text() == "X = 1\n"
    assert (tmp_path / "b" / "data" / "a.json").exists()


@pytest.mark.parametrize("name", sorted(BAD_MANIFESTS))
def test_a_bad_manifest_is_refused(name: str) -> None:
    text, reason = BAD_MANIFESTS[name]
    info = inspect_bundle(zip_of(manifest=text))
    with pytest.raises(ConfigError, match=reason):
        parse_manifest(info.manifest_text)


@pytest.mark.parametrize("line,reason", [
    ("-r /etc/passwd", "-r is not allowed"),
    ("--requirement=/root/.stoker/endpoint.json", "--requirement is not allowed"),
    ("-c constraints.txt", "-c is not allowed"),
    ("-e git+https://example.org/x.git#egg=x", "-e is not allowed"),
    ("./vendor/mypkg", "local paths"),
    ("/opt/wheels/x.whl", "local paths"),
    ("pkg @ file:///etc/shadow", "file: URLs"),
    ("--index-url file:///root/.stoker", "file: URLs"),
    ("--find-links /root", "must be an http(s) URL"),
    ("requests --index-url=https://mirror.example/${STOKER_TOKEN}", "environment variables"),
    ("--target /usr/lib", "--target is not allowed"),
    ("--no-binary :all:", "--no-binary is not allowed"),
])
def test_a_hostile_requirements_file_is_refused(line: str, reason: str) -> None:
    with pytest.raises(BundleError, match=re.escape(reason)) as refused:
        check_requirements(f"# deps\nrequests==2.31.0\n{line}\n")
    assert "line 3" in refused.value.message


def test_ordinary_requirements_pass() -> None:
    check_requirements("requests>=2.31  # http\nnumpy==1.26.4; python_version >= '3.10'\n"
                       "orjson[extra]==3.9 --hash=sha256:abc\n--extra-index-url https://pypi.example/simple\n")


def test_the_platform_refuses_hostile_bundles_and_changes_nothing(platform: RunningPlatform,
                                                                  tmp_path: Path) -> None:
    stored_before = sorted((platform.home / "bundles").glob("*"))
    for name in ("slip", "absolute", "symlink", "bomb", "many-small-bombs", "not-a-zip", "duplicate-normalised"):
        path = tmp_path / f"{name}.zip"
        path.write_bytes(CORPUS[name][0]())
        r = platform.cli("deploy", str(path))
        assert r.returncode == 2, (name, r.stdout, r.stderr)
        assert CORPUS[name][1] in r.stderr, (name, r.stderr)
        assert "Traceback" not in r.stderr + r.stdout
    bad = tmp_path / "bad-manifest.zip"
    bad.write_bytes(zip_of(manifest=BAD_MANIFESTS["not-toml"][0]))
    r = platform.cli("deploy", str(bad))
    assert r.returncode == 2 and "not valid TOML" in r.stderr
    requirements = tmp_path / "reqs.zip"
    requirements.write_bytes(zip_of(("requirements.txt", "-r /etc/shadow\n")))
    r = platform.cli("deploy", str(requirements))
    assert r.returncode == 2 and "requirements.txt line 1" in r.stderr, r.stderr
    assert json.loads(platform.cli("functions", "--format", "json", check=True).stdout) == []
    assert sorted((platform.home / "bundles").glob("*")) == stored_before
    assert not list(Path("/tmp").glob("escape-*")) and not list(tmp_path.parent.glob("escape-*"))
    assert platform.client().functions() == []  # type: ignore[attr-defined]
