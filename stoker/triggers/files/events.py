"""The event a dropped file fires: an S3 "ObjectCreated:Put" notification, plus the local path.

Lambda code written for S3 events keeps working: `Records[0].s3.bucket.name` is the
watched folder's name, `s3.object.key` the file's path below it (URL-encoded as S3 does:
decode with urllib.parse.unquote_plus), `eTag` the MD5 of its content. `file.path` is
the absolute local path, not encoded.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Digests:
    sha256: str
    md5: str
    #: bytes read: the size the digests describe
    size: int


def digest_file(path: str) -> Digests:
    """SHA-256 (the processed record's content hash) and MD5 (the S3 eTag), in one read."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return Digests(sha.hexdigest(), md5.hexdigest(), size)


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def s3_event(bucket: str, folder: str, rel: str, abs_path: str, size: int, mtime_ns: int,
             digests: Digests) -> dict[str, Any]:
    return {"Records": [{
        "eventVersion": "2.1",
        "eventSource": "stoker:files",
        "awsRegion": "local",
        "eventTime": _iso(mtime_ns),
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {
                "key": quote_plus(rel, safe="/"),
                "size": size,
                "eTag": digests.md5,
                "sequencer": f"{mtime_ns:016X}",
            },
        },
        "file": {"path": abs_path, "folder": folder},
    }]}
