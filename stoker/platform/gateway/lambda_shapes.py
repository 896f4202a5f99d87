"""The Lambda API's shapes: ARNs, function and alias configurations, and AWS-style errors.

Errors are sent as AWS sends them, so that botocore raises a ClientError with the right
code: the code in the `x-amzn-ErrorType` header and a `{"Type", "message"}` body.
"""

from __future__ import annotations

import base64
import re
import sys
from typing import Any

from starlette.responses import Response

from stoker.errors import InvalidInput, StokerError
from stoker.platform.gateway.httputil import json_response
from stoker.platform.registry.store import AliasInfo, VersionInfo

ACCOUNT_ID = "000000000000"
DEFAULT_REGION = "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT_ID}:role/stoker"
#: arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER], or ACCOUNT:function:NAME[:QUALIFIER]
_ARN_RE = re.compile(r"^(?:arn:aws[a-z-]*:lambda:[a-z0-9-]*:)?[0-9]*:?function:([^:]+)(?::([^:]+))?$")


def function_arn(region: str, name: str, qualifier: str | None = None) -> str:
    arn = f"arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn


def function_ref(ref: str, qualifier: str | None) -> tuple[str, str | None]:
    """A FunctionName as Lambda takes it (name, name:qualifier, or an ARN) and the Qualifier parameter."""
    inline: str | None = None
    m = _ARN_RE.match(ref)
    if m:
        name, inline = m.group(1), m.group(2)
    elif ":" in ref:
        name, _, inline = ref.partition(":")
    else:
        name = ref
    if inline and qualifier and inline != qualifier:
        raise InvalidInput(f"the function name says qualifier {inline!r} and Qualifier says {qualifier!r}; give one")
    return name, (qualifier or inline or None)


def aws_runtime(runtime: str) -> str:
    if runtime == "python":
        return f"python{sys.version_info.major}.{sys.version_info.minor}"
    if runtime == "nodejs":
        return "nodejs20.x"
    return "provided.al2023"


def code_sha256(code_hash: str) -> str:
    """Lambda gives CodeSha256 as base64; stoker's content hash is hex SHA-256."""
    try:
        return base64.b64encode(bytes.fromhex(code_hash)).decode()
    except ValueError:
        return code_hash


def configuration(info: VersionInfo, label: str, region: str, code_size: int) -> dict[str, Any]:
    """FunctionConfiguration for one version; `label` is "$LATEST" or the version number."""
    spec = info.spec
    return {
        "FunctionName": info.function,
        "FunctionArn": function_arn(region, info.function, label if label != "$LATEST" else None),
        "Runtime": aws_runtime(spec.runtime),
        "Role": ROLE,
        "Handler": spec.handler,
        "CodeSize": code_size,
        "Description": spec.description,
        "Timeout": max(1, round(spec.timeout)),
        "MemorySize": spec.memory,
        "LastModified": info.deployed_at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{info.deployed_at.microsecond // 1000:03d}"
                        + "+0000",
        "CodeSha256": code_sha256(info.code_hash),
        "Version": label,
        "Environment": {"Variables": dict(spec.env)},
        "TracingConfig": {"Mode": "PassThrough"},
        "RevisionId": f"{info.function}-{info.version}-{info.code_hash[:12]}",
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": ["x86_64"],
        "EphemeralStorage": {"Size": 512},
    }


def alias_configuration(alias: AliasInfo, region: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "AliasArn": function_arn(region, alias.function, alias.name),
        "Name": alias.name,
        "FunctionVersion": str(alias.version),
        "Description": "",
        "RevisionId": f"{alias.function}-{alias.name}-{len(alias.history)}",
    }
    if alias.weights:
        out["RoutingConfig"] = {"AdditionalVersionWeights": dict(alias.weights)}
    return out


def aws_error(exc: StokerError, headers: dict[str, str] | None = None) -> Response:
    status = exc.status_code if exc.status_code >= 400 else 500
    body = {"Type": "User" if status < 500 else "Service", "message": exc.message}
    all_headers = {"x-amzn-errortype": exc.code, **(headers or {})}
    if exc.code == "TooManyRequestsException":
        body["Reason"] = "ReservedFunctionConcurrentInvocationLimitExceeded"
        all_headers["retry-after"] = "1"
    return json_response(body, status=status, headers=all_headers)
