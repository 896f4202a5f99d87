"""Settings from the environment, and where stoker keeps its files.

Every role reads the same variables, so `stoker up` and a cluster of separate
roles behave alike:

    STOKER_HOME            data directory (default ~/.stoker)
    STOKER_REDIS_URL       Redis to use; unset means `stoker up` starts a private one
    STOKER_DB_URL          SQLAlchemy URL of the ledger (default SQLite in STOKER_HOME)
    STOKER_TOKEN           the admin token the gateway accepts (and clients send)
    STOKER_URL             where clients find the gateway (else STOKER_HOME/endpoint.json)
    STOKER_PREFIX          prefix of every Redis key (default "stoker")
    STOKER_NODE_DEAD_AFTER seconds without a heartbeat before a node is declared dead
    STOKER_GLOBAL_CONCURRENCY  cap on concurrent executions across the platform
    STOKER_PREFETCH        the most async events a node holds per slot (it holds fewer of slow functions)
    STOKER_NODEJS          the node executable for runtime = "nodejs" (default: `node` on PATH)
    STOKER_NPM             the npm that installs Node.js dependencies at deploy (default: `npm` on PATH)
    STOKER_SIGV4_SECRET    when set, the Lambda API checks SigV4 signatures made with this
                           secret access key (the access key id is always a stoker token)
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from stoker.errors import ConfigError, PlatformUnavailable


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number: set it to a number of seconds or a count") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be greater than 0")
    return value


def normalise_db_url(url: str) -> str:
    """`postgresql://` means psycopg 3, as the docs promise (SQLAlchemy would pick psycopg2)."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain) :]
    return url


@dataclass(frozen=True)
class Settings:
    home: Path
    redis_url: str | None
    db_url: str
    token: str | None
    prefix: str
    node_dead_after: float
    global_concurrency: int
    log_retention_s: float
    log_max_entries: int
    prefetch: int = 64
    extra: dict[str, str] = field(default_factory=dict)
    sigv4_secret: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("STOKER_HOME") or Path.home() / ".stoker").expanduser().absolute()
        db_url = os.environ.get("STOKER_DB_URL") or f"sqlite:///{home / 'ledger.db'}"
        prefix = os.environ.get("STOKER_PREFIX") or "stoker"
        if not prefix.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ConfigError(f"STOKER_PREFIX={prefix!r}: use letters, digits, '-', '_' or '.' only")
        return cls(
            home=home,
            redis_url=os.environ.get("STOKER_REDIS_URL") or None,
            db_url=normalise_db_url(db_url),
            token=os.environ.get("STOKER_TOKEN") or None,
            prefix=prefix,
            node_dead_after=_number("STOKER_NODE_DEAD_AFTER", 10.0),
            global_concurrency=int(_number("STOKER_GLOBAL_CONCURRENCY", 1000)),
            log_retention_s=_number("STOKER_LOG_RETENTION", 7 * 24 * 3600.0),
            log_max_entries=int(_number("STOKER_LOG_MAX_ENTRIES", 100_000)),
            prefetch=int(_number("STOKER_PREFETCH", 64)),
            sigv4_secret=os.environ.get("STOKER_SIGV4_SECRET") or None,
        )

    # -- where things live under STOKER_HOME ---------------------------------------------
    @property
    def bundle_dir(self) -> Path:
        """Content-addressed bundle store (zips by hash)."""
        return self.home / "bundles"

    @property
    def node_dir(self) -> Path:
        """A node's own cache: unpacked bundles and per-worker scratch space."""
        return self.home / "node"

    @property
    def redis_dir(self) -> Path:
        return self.home / "redis"

    @property
    def endpoint_file(self) -> Path:
        return self.home / "endpoint.json"

    @property
    def token_file(self) -> Path:
        return self.home / "token"

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise ConfigError(
                "STOKER_REDIS_URL is not set: point it at your Redis (redis://host:6379/0), "
                "or use `stoker up`, which starts a private one"
            )
        return self.redis_url

    def ensure_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.home, 0o700)

    def admin_token(self) -> str:
        """STOKER_TOKEN, or the token generated once for this STOKER_HOME (file mode 0600)."""
        if self.token:
            return self.token
        self.ensure_home()
        try:
            return self.token_file.read_text().strip()
        except FileNotFoundError:
            token = "stk_" + secrets.token_urlsafe(32)
            fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(token + "\n")
            return token


@dataclass(frozen=True)
class Endpoint:
    """How a client reaches a running platform."""

    url: str
    token: str | None
    redis_url: str | None = None


def discover_endpoint(url: str | None = None, token: str | None = None) -> Endpoint:
    """Explicit arguments, then STOKER_URL/STOKER_TOKEN, then STOKER_HOME/endpoint.json."""
    url = url or os.environ.get("STOKER_URL")
    token = token or os.environ.get("STOKER_TOKEN")
    if url:
        return Endpoint(url=url.rstrip("/"), token=token)
    home = Path(os.environ.get("STOKER_HOME") or Path.home() / ".stoker").expanduser()
    path = home / "endpoint.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PlatformUnavailable(
            f"stoker is not running here: {path} does not exist. Start it with `stoker up`, "
            "or set STOKER_URL and STOKER_TOKEN to reach a remote platform"
        ) from None
    except (OSError, ValueError) as e:
        raise PlatformUnavailable(f"cannot read {path}: {e}") from None
    return Endpoint(url=str(data["url"]).rstrip("/"), token=token or data.get("token"),
                    redis_url=data.get("redis_url"))


def write_endpoint(settings: Settings, endpoint: Endpoint) -> None:
    """Write endpoint.json atomically with mode 0600: it holds the admin token."""
    settings.ensure_home()
    tmp = settings.endpoint_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": endpoint.url, "token": endpoint.token, "redis_url": endpoint.redis_url}, f)
    os.chmod(tmp, 0o600)
    os.replace(tmp, settings.endpoint_file)
