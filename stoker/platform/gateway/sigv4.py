"""AWS Signature Version 4, as boto3 and the AWS CLI sign requests to the Lambda API.

Stoker uses the access key id as the credential: it must be a stoker token (the admin
token or one from `stoker token create`). The signature itself is checked only when a
secret is configured (STOKER_SIGV4_SECRET): every client then signs with that secret
as its `aws_secret_access_key`, and a request whose signature does not match, or whose
date is more than 15 minutes off, is refused.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

from starlette.requests import Request

from stoker.errors import Unauthorized

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = dt.timedelta(minutes=15)
UNSIGNED = "UNSIGNED-PAYLOAD"
_FIELD_RE = re.compile(r"(Credential|SignedHeaders|Signature)=([^,\s]+)")


@dataclass(frozen=True)
class SigV4:
    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str


def parse_authorization(header: str) -> SigV4 | None:
    """The parts of an `AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...` header."""
    if not header.startswith(ALGORITHM + " "):
        return None
    fields = dict(_FIELD_RE.findall(header[len(ALGORITHM):]))
    credential = fields.get("Credential", "")
    parts = credential.rsplit("/", 4)
    if len(parts) != 5 or parts[4] != "aws4_request" or not parts[0]:
        raise Unauthorized("the SigV4 Authorization header has no valid Credential "
                           "(expected <access key>/<date>/<region>/<service>/aws4_request)")
    if "SignedHeaders" not in fields or "Signature" not in fields:
        raise Unauthorized("the SigV4 Authorization header lacks SignedHeaders or Signature")
    return SigV4(access_key=parts[0], date=parts[1], region=parts[2], service=parts[3],
                 signed_headers=tuple(fields["SignedHeaders"].split(";")), signature=fields["Signature"])


def _canonical_query(query: bytes) -> str:
    pairs = []
    for item in query.split(b"&") if query else []:
        if not item:
            continue
        k, _, v = item.decode("latin-1").partition("=")
        pairs.append((quote(unquote(k), safe="-_.~"), quote(unquote(v), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_request(request: Request, sig: SigV4, body: bytes) -> str:
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    path = raw_path.decode("latin-1").split("?", 1)[0] or "/"
    # botocore encodes the already-encoded path once more for every service but S3
    canonical_path = quote(path, safe="/~")
    headers = []
    for name in sig.signed_headers:
        values = request.headers.getlist(name)
        headers.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}\n")
    body_hash = hashlib.sha256(body).hexdigest()
    declared = request.headers.get("x-amz-content-sha256")
    if declared and declared != UNSIGNED and declared != body_hash:
        raise Unauthorized("X-Amz-Content-SHA256 does not match the body")
    payload_hash = declared or body_hash
    return "\n".join([request.method, canonical_path, _canonical_query(request.scope.get("query_string", b"")),
                      "".join(headers), ";".join(sig.signed_headers), payload_hash])


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def expected_signature(request: Request, sig: SigV4, body: bytes, secret: str) -> str:
    amz_date = request.headers.get("x-amz-date", "")
    scope = f"{sig.date}/{sig.region}/{sig.service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, amz_date, scope,
                         hashlib.sha256(canonical_request(request, sig, body).encode()).hexdigest()])
    key = _hmac(("AWS4" + secret).encode(), sig.date)
    for part in (sig.region, sig.service, "aws4_request"):
        key = _hmac(key, part)
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def verify_signature(request: Request, sig: SigV4, body: bytes, secret: str,
                     now: dt.datetime | None = None) -> None:
    amz_date = request.headers.get("x-amz-date", "")
    try:
        signed_at = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        raise Unauthorized("the request has no valid X-Amz-Date header to check its signature against") from None
    now = now or dt.datetime.now(dt.UTC)
    if abs(now - signed_at) > MAX_SKEW:
        raise Unauthorized(f"the request was signed at {amz_date}, more than 15 minutes from the server's clock")
    if "host" not in sig.signed_headers:
        raise Unauthorized("the signature does not cover the Host header")
    expected = expected_signature(request, sig, body, secret)
    if not hmac.compare_digest(expected, sig.signature):
        raise Unauthorized("the request signature does not match: sign with the secret the platform is "
                           "configured with (STOKER_SIGV4_SECRET) as aws_secret_access_key")
