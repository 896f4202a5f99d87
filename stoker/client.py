"""The Python client: `stoker.Client()` finds the platform as the CLI does.

    from stoker import Client, FunctionError
    c = Client()                      # STOKER_URL/STOKER_TOKEN, else $STOKER_HOME/endpoint.json
    c.invoke("hello", {"name": "x"})  # the result, or raises FunctionError
    c.invoke_async("hello", {...})    # the invocation id
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from stoker import errors as E
from stoker.settings import discover_endpoint

_BY_STATUS: dict[int, type[E.StokerError]] = {
    400: E.InvalidInput, 401: E.Unauthorized, 403: E.Forbidden, 404: E.NotFound, 409: E.Conflict,
    413: E.PayloadTooLarge, 429: E.Throttled, 503: E.PlatformUnavailable,
}


@dataclass(frozen=True)
class InvokeResult:
    """A sync invocation as the API answered it."""

    id: str
    version: str
    ok: bool
    body: bytes

    def value(self) -> Any:
        return orjson.loads(self.body) if self.body else None


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 960.0) -> None:
        endpoint = discover_endpoint(url, token)
        self.url = endpoint.url
        self.token = endpoint.token
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as e:
            raise E.PlatformUnavailable(f"cannot reach stoker at {self.url}: {e}. Is `stoker up` running?") from None
        if response.status_code >= 400:
            raise _error_from(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return orjson.loads(self._request(method, path, **kwargs).content)

    # -- functions ------------------------------------------------------------------------
    def deploy(self, source: str | Path | bytes) -> dict[str, Any]:
        """Deploy a folder, a zip file, or zip bytes. Returns the version made (or kept)."""
        from stoker.platform.registry.deploy import read_deployable

        data = source if isinstance(source, bytes) else read_deployable(Path(source))
        result: dict[str, Any] = self._json("POST", "/api/functions", content=data,
                                            headers={"content-type": "application/zip"})
        return result

    def functions(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/functions")
        return result

    def invoke_result(self, name: str, payload: Any = None, qualifier: str | None = None,
                      raw: bytes | None = None) -> InvokeResult:
        body = raw if raw is not None else orjson.dumps(payload if payload is not None else {})
        params = {"qualifier": qualifier} if qualifier else {}
        r = self._request("POST", f"/api/functions/{name}/invoke", content=body, params=params,
                          headers={"content-type": "application/json"})
        return InvokeResult(id=r.headers.get("x-stoker-invocation-id", ""),
                            version=r.headers.get("x-stoker-executed-version", ""),
                            ok="x-stoker-function-error" not in r.headers, body=r.content)

    def invoke(self, name: str, payload: Any = None, qualifier: str | None = None) -> Any:
        """Run the function and return its result; raises FunctionError if it failed."""
        result = self.invoke_result(name, payload, qualifier)
        if not result.ok:
            raise E.FunctionError(orjson.loads(result.body))
        return result.value()

    def invoke_async(self, name: str, payload: Any = None, qualifier: str | None = None,
                     raw: bytes | None = None) -> str:
        body = raw if raw is not None else orjson.dumps(payload if payload is not None else {})
        params: dict[str, str] = {"async": "true"}
        if qualifier:
            params["qualifier"] = qualifier
        data = self._json("POST", f"/api/functions/{name}/invoke", content=body, params=params,
                          headers={"content-type": "application/json"})
        return str(data["id"])

    # -- the ledger and logs --------------------------------------------------------------
    def invocations(self, **filters: Any) -> list[dict[str, Any]]:
        params = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in filters.items() if v is not None}
        result: list[dict[str, Any]] = self._json("GET", "/api/invocations", params=params)
        return result

    def invocation(self, invocation_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/invocations/{invocation_id}")
        return result

    def export_invocations(self, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every row matching the filters, oldest first, streamed (no limit)."""
        params = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in filters.items() if v is not None}
        try:
            with self._http.stream("GET", "/api/invocations/export", params=params,
                                   timeout=httpx.Timeout(30.0, read=300.0)) as r:
                if r.status_code >= 400:
                    r.read()
                    raise _error_from(r)
                for line in r.iter_lines():
                    if line.strip():
                        yield orjson.loads(line)
        except httpx.HTTPError as e:
            raise E.PlatformUnavailable(f"lost the export stream from {self.url}: {e}") from None

    def prune_invocations(self, older_than: str, dry_run: bool = False) -> dict[str, Any]:
        """Delete ledger rows received more than `older_than` (e.g. "30d") ago."""
        params = {"older_than": older_than, "dry_run": str(dry_run).lower()}
        result: dict[str, Any] = self._json("DELETE", "/api/invocations", params=params)
        return result

    def bill(self, since: str | None = None, until: str | None = None, month: str | None = None,
             by: str = "function", free_tier: bool = True) -> dict[str, Any]:
        params = {k: v for k, v in (("since", since), ("until", until), ("month", month)) if v}
        params.update(by=by, free_tier=str(free_tier).lower())
        result: dict[str, Any] = self._json("GET", "/api/bill", params=params)
        return result

    def logs(self, name: str, tail: int | None = None, since: str | None = None,
             request_id: str | None = None) -> list[dict[str, Any]]:
        params = {k: str(v) for k, v in (("tail", tail), ("since", since), ("request_id", request_id)) if v is not None}
        data = self._json("GET", f"/api/functions/{name}/logs", params=params)
        lines: list[dict[str, Any]] = data["lines"]
        return lines

    def follow_logs(self, name: str, tail: int | None = None, since: str | None = None,
                    request_id: str | None = None) -> Iterator[dict[str, Any]]:
        params = {k: str(v) for k, v in (("tail", tail), ("since", since), ("request_id", request_id)) if v is not None}
        params["follow"] = "true"
        try:
            with self._http.stream("GET", f"/api/functions/{name}/logs", params=params,
                                   timeout=httpx.Timeout(10.0, read=None)) as r:
                if r.status_code >= 400:
                    r.read()
                    raise _error_from(r)
                for line in r.iter_lines():
                    if line.strip():
                        yield orjson.loads(line)
        except httpx.HTTPError as e:
            raise E.PlatformUnavailable(f"lost the log stream from {self.url}: {e}") from None


def _error_from(response: httpx.Response) -> E.StokerError:
    try:
        data = orjson.loads(response.content)
        message = str(data.get("error") or data.get("message") or data.get("Message") or data)
    except (orjson.JSONDecodeError, AttributeError):
        message = response.text[:500] or f"HTTP {response.status_code}"
    cls = _BY_STATUS.get(response.status_code, E.StokerError)
    return cls(message)
