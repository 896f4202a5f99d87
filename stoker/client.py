"""The Python client: `stoker.Client()` finds the platform as the CLI does.

    from stoker import Client, FunctionError
    c = Client()                      # STOKER_URL/STOKER_TOKEN, else $STOKER_HOME/endpoint.json
    c.invoke("hello", {"name": "x"})  # the result, or raises FunctionError
    c.invoke_async("hello", {...})    # the invocation id
    c.enqueue("orders", {"n": 1})     # the message id (see docs/queues.md)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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

    # -- cron ---------------------------------------------------------------------------------
    def schedules(self, count: int = 3) -> list[dict[str, Any]]:
        """Every cron schedule with its next `count` fire times."""
        result: list[dict[str, Any]] = self._json("GET", "/api/cron", params={"next": count})
        return result

    # -- functions ------------------------------------------------------------------------
    def deploy(self, source: str | Path | bytes, source_dir: str | Path | None = None,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Deploy a folder, a zip file, or zip bytes. Returns the version made (or kept).

        Relative paths in the manifest's triggers resolve against the folder deployed from
        (for zip bytes, give it as `source_dir`). `progress`, when given, receives each line of
        the dependency installer's output as the platform runs it.
        """
        from stoker.platform.registry.deploy import read_deployable, source_folder

        if isinstance(source, bytes):
            data = source
        else:
            data = read_deployable(Path(source))
            source_dir = source_dir or source_folder(Path(source))
        params = {"source_dir": str(Path(source_dir).absolute())} if source_dir else {}
        headers = {"content-type": "application/zip"}
        if progress is None:
            result: dict[str, Any] = self._json("POST", "/api/functions", content=data, params=params,
                                                headers=headers)
            return result
        return self._deploy_streamed(data, {**params, "progress": "true"}, headers, progress)

    def _deploy_streamed(self, data: bytes, params: dict[str, str], headers: dict[str, str],
                         progress: Callable[[str], None]) -> dict[str, Any]:
        try:
            with self._http.stream("POST", "/api/functions", content=data, params=params,
                                   headers=headers) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_from(response)
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    message = orjson.loads(line)
                    if "progress" in message:
                        progress(str(message["progress"]))
                    elif "result" in message:
                        result: dict[str, Any] = message["result"]
                        return result
                    else:
                        cls = _BY_STATUS.get(int(message.get("status", 500)), E.StokerError)
                        raise cls(str(message.get("error") or message))
        except httpx.HTTPError as e:
            raise E.PlatformUnavailable(f"lost stoker at {self.url} during the deploy: {e}. `stoker functions` "
                                        "shows whether it finished") from None
        raise E.PlatformUnavailable(f"stoker at {self.url} ended the deploy without an answer: `stoker functions` "
                                    "shows whether it finished")

    def function(self, name: str) -> dict[str, Any]:
        """One function: its newest version's settings and triggers, its versions and aliases."""
        result: dict[str, Any] = self._json("GET", f"/api/functions/{name}")
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

    def dead_letters(self, name: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", f"/api/functions/{name}/dlq")
        return result

    def redrive_dead_letters(self, name: str, invocation_id: str | None = None) -> list[dict[str, str]]:
        body = orjson.dumps({"id": invocation_id}) if invocation_id else b""
        data = self._json("POST", f"/api/functions/{name}/dlq/redrive", content=body,
                          headers={"content-type": "application/json"})
        moved: list[dict[str, str]] = data["redriven"]
        return moved

    # -- queues ---------------------------------------------------------------------------
    @staticmethod
    def _send_options(delay: float, attributes: dict[str, Any] | None) -> dict[str, Any]:
        options: dict[str, Any] = {"headers": {"content-type": "application/json"}}
        if delay:
            options["params"] = {"delay": repr(float(delay))}
        if attributes:
            options["headers"]["x-stoker-message-attributes"] = orjson.dumps(attributes).decode()
        return options

    def enqueue(self, queue: str, message: Any = None, *, delay: float = 0, attributes: dict[str, Any] | None = None,
                raw: bytes | None = None) -> str:
        """Send one message (any JSON value, at most 256 KB) to a named queue; returns its message id.

        `delay` keeps it invisible for that many seconds (up to 900); `attributes` are SQS-style
        message attributes (name -> string or number). `raw` sends JSON bytes as they are.
        """
        body = raw if raw is not None else orjson.dumps(message)
        data = self._json("POST", f"/api/queues/{queue}/messages", content=body,
                          **self._send_options(delay, attributes))
        return str(data["id"])

    def enqueue_batch(self, queue: str, messages: list[Any], *, delay: float = 0,
                      attributes: dict[str, Any] | None = None) -> list[str]:
        """Send 1 to 10 messages at once (all or none); returns their message ids in order."""
        data = self._json("POST", f"/api/queues/{queue}/messages/batch", content=orjson.dumps(messages),
                          **self._send_options(delay, attributes))
        return [str(i) for i in data["ids"]]

    def queues(self) -> list[dict[str, Any]]:
        """Every queue with its available, in-flight and delayed messages and its consumers."""
        result: list[dict[str, Any]] = self._json("GET", "/api/queues")
        return result

    def peek(self, queue: str, limit: int = 10) -> list[dict[str, Any]]:
        """The oldest messages of a queue (id, body, receive_count, sent_at, ...), without receiving them."""
        result: list[dict[str, Any]] = self._json("GET", f"/api/queues/{queue}/messages", params={"limit": limit})
        return result

    def purge(self, queue: str) -> int:
        """Delete every message of a queue; returns how many were deleted."""
        return int(self._json("DELETE", f"/api/queues/{queue}/messages")["purged"])

    def redrive(self, queue: str, to: str | None = None, limit: int | None = None) -> dict[str, int]:
        """Move messages of a (dead-letter) queue back to their source queue, or to `to`."""
        params = {k: str(v) for k, v in (("to", to), ("max", limit)) if v is not None}
        result: dict[str, int] = self._json("POST", f"/api/queues/{queue}/redrive", params=params)
        return result

    # -- versions and aliases -------------------------------------------------------------
    def versions(self, name: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", f"/api/functions/{name}/versions")
        return result

    def aliases(self, name: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", f"/api/functions/{name}/aliases")
        return result

    def set_alias(self, name: str, alias: str, version: int | str,
                  weights: dict[str, float] | None = None) -> dict[str, Any]:
        """Create or move an alias; `weights` (version -> share) replace any earlier ones."""
        body = {"version": str(version), "weights": {str(k): v for k, v in (weights or {}).items()}}
        result: dict[str, Any] = self._json("PUT", f"/api/functions/{name}/aliases/{alias}", json=body)
        return result

    def delete_alias(self, name: str, alias: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("DELETE", f"/api/functions/{name}/aliases/{alias}")
        return result

    def rollback(self, name: str, alias: str | None = None, to: int | str | None = None) -> dict[str, Any]:
        body = {"alias": alias, "to": str(to) if to is not None else None}
        result: dict[str, Any] = self._json("POST", f"/api/functions/{name}/rollback", json=body)
        return result

    def delete(self, name: str, version: int | str | None = None) -> dict[str, Any]:
        """Delete a function, or one of its versions."""
        path = f"/api/functions/{name}" + (f"/versions/{version}" if version is not None else "")
        result: dict[str, Any] = self._json("DELETE", path)
        return result

    # -- tokens ---------------------------------------------------------------------------
    def create_token(self, name: str, rights: list[str]) -> dict[str, Any]:
        """A new token; its secret is in the answer's "token" and is never shown again."""
        result: dict[str, Any] = self._json("POST", "/api/tokens", json={"name": name, "rights": rights})
        return result

    def tokens(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        params = {"revoked": "true"} if include_revoked else {}
        result: list[dict[str, Any]] = self._json("GET", "/api/tokens", params=params)
        return result

    def revoke_token(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("DELETE", f"/api/tokens/{name}")
        return result

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
