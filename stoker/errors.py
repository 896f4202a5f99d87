"""Every error stoker raises on purpose.

StokerError
 ├── ConfigError            a setting or manifest is wrong (names the setting and what to do)
 ├── BundleError            a bundle cannot be deployed (hostile, oversize, missing handler)
 ├── NotFound               a function, version, alias or invocation does not exist
 ├── Conflict               the operation clashes with current state (e.g. an alias points here)
 ├── PayloadTooLarge        an event or message is over its size limit
 ├── InvalidInput           malformed JSON or a bad value from a caller
 ├── Throttled              a sync call over a concurrency limit
 ├── Unauthorized           a missing or invalid token
 ├── Forbidden              a valid token without the right
 ├── PlatformUnavailable    the platform cannot be reached or is not running
 └── FunctionError          the function itself failed (raised by the client)

Every user-facing message says what was wrong and what to do about it.
"""

from __future__ import annotations

from typing import Any


class StokerError(Exception):
    """The root of stoker's own errors."""

    #: the HTTP status the gateway answers with for this error
    status_code = 500
    #: a short machine-readable code, also used as the Lambda API error type
    code = "ServiceException"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code}


class ConfigError(StokerError):
    status_code = 400
    code = "InvalidParameterValueException"


class BundleError(StokerError):
    status_code = 400
    code = "InvalidParameterValueException"


class InvalidInput(StokerError):
    status_code = 400
    code = "InvalidRequestContentException"


class NotFound(StokerError):
    status_code = 404
    code = "ResourceNotFoundException"


class Conflict(StokerError):
    status_code = 409
    code = "ResourceConflictException"


class PayloadTooLarge(StokerError):
    status_code = 413
    code = "RequestTooLargeException"


class Throttled(StokerError):
    status_code = 429
    code = "TooManyRequestsException"


class Unauthorized(StokerError):
    status_code = 401
    code = "UnrecognizedClientException"


class Forbidden(StokerError):
    status_code = 403
    code = "AccessDeniedException"


class PlatformUnavailable(StokerError):
    status_code = 503
    code = "ServiceException"


class FunctionError(StokerError):
    """The function ran and failed: raised by :class:`stoker.Client` with Lambda's error object."""

    status_code = 200

    def __init__(self, error: dict[str, Any]) -> None:
        self.error = error
        self.error_type = str(error.get("errorType", "Error"))
        self.error_message = str(error.get("errorMessage", ""))
        super().__init__(f"{self.error_type}: {self.error_message}")
