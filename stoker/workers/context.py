"""The `context` object a Python handler receives, with the fields Lambda code uses."""

from __future__ import annotations

import time
from typing import Any


class LambdaContext:
    """Mirrors awslambdaric's LambdaContext (memory_limit_in_mb is a string there too)."""

    __slots__ = (
        "_deadline_ms",
        "aws_request_id",
        "client_context",
        "function_name",
        "function_version",
        "identity",
        "invoked_function_arn",
        "log_group_name",
        "log_stream_name",
        "memory_limit_in_mb",
        "tenant_id",
    )

    def __init__(
        self,
        *,
        request_id: str,
        function_name: str,
        function_version: str,
        invoked_function_arn: str,
        memory_limit_in_mb: int | str,
        log_group_name: str,
        log_stream_name: str,
        deadline_ms: int,
        client_context: Any = None,
        identity: Any = None,
    ) -> None:
        self.aws_request_id = request_id
        self.function_name = function_name
        self.function_version = function_version
        self.invoked_function_arn = invoked_function_arn
        self.memory_limit_in_mb = str(memory_limit_in_mb)
        self.log_group_name = log_group_name
        self.log_stream_name = log_stream_name
        self.client_context = client_context
        self.identity = identity
        self.tenant_id = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self._deadline_ms - int(time.time() * 1000))

    def __repr__(self) -> str:
        return (f"LambdaContext(aws_request_id={self.aws_request_id!r}, function_name={self.function_name!r}, "
                f"function_version={self.function_version!r})")


def function_arn(name: str, qualifier: str | None = None) -> str:
    arn = f"arn:aws:lambda:local:000000000000:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn
