"""The checks `stoker up` runs before it starts anything, each failing with one line that says
what to do: the home is writable, the gateway's port is free, the Redis is usable (the embedded
binary, or STOKER_REDIS_URL answering), the database is reachable."""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from pathlib import Path

from stoker.errors import ConfigError, PlatformUnavailable
from stoker.extras import missing_extra_message


def not_writable(home: Path, error: OSError) -> ConfigError:
    return ConfigError(f"STOKER_HOME={home} is not writable ({error.strerror or error}): fix its permissions, "
                       "or set STOKER_HOME to a folder you own")


def check_home(home: Path) -> None:
    """STOKER_HOME exists (created 0700 if not) and stoker can write in it."""
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile(dir=home, prefix=".write-check-"):
            pass
    except OSError as e:
        raise not_writable(home, e) from None


def bind_gateway(host: str, port: int) -> socket.socket:
    """Bind the gateway's socket now, so that a port in use fails before anything starts."""
    from stoker.platform.gateway.server import bind

    try:
        return bind(host, port)
    except socket.gaierror as e:
        raise ConfigError(f"--host {host!r} is not an address of this machine ({e.strerror}): "
                          "use 127.0.0.1, 0.0.0.0 or one of its addresses") from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} on {host} is already in use (another stoker, or another program): "
                              "stop it, or choose another with --port N (--port 0 picks a free one)") from None
        if e.errno == errno.EACCES:
            raise ConfigError(f"port {port} on {host} needs privileges: use a port above 1023 with --port N") \
                from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise ConfigError(f"--host {host} is not an address of this machine: use 127.0.0.1, 0.0.0.0 "
                              "or one of its addresses") from None
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror or e}): choose another --host or --port") \
            from None


def safe_url(url: str) -> str:
    """A URL with its password hidden, for messages."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def check_redis_url(url: str, timeout: float = 3.0) -> None:
    """An external Redis answers PING."""
    import redis

    shown = safe_url(url)
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    except ValueError as e:
        raise ConfigError(f"STOKER_REDIS_URL={shown} is not a Redis URL ({e}): use redis://host:6379/0") from None
    try:
        client.ping()
    except redis.exceptions.AuthenticationError:
        raise PlatformUnavailable(f"the Redis at STOKER_REDIS_URL={shown} refused the password: "
                                  "put the right one in the URL (redis://:PASSWORD@host:6379/0)") from None
    except redis.exceptions.RedisError as e:
        raise PlatformUnavailable(f"cannot reach the Redis at STOKER_REDIS_URL={shown} ({e}): start it, "
                                  "fix the URL, or unset STOKER_REDIS_URL to use a private one") from None
    finally:
        client.close()


def check_database(url: str, timeout: float = 5.0) -> None:
    """The ledger's database accepts a connection (its driver installed)."""
    from sqlalchemy import text
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from stoker.platform.db import make_engine

    shown = safe_url(url)
    if url.startswith("sqlite:///"):
        folder = Path(url[len("sqlite:///"):]).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create {folder} for the ledger {shown} ({e.strerror}): "
                              "set STOKER_DB_URL to a database you can write") from None
        if not os.access(folder, os.W_OK):
            raise ConfigError(f"the ledger's folder {folder} is not writable: fix its permissions, "
                              "or set STOKER_DB_URL to a database you can write")
    try:
        kwargs = {} if url.startswith("sqlite") else {"connect_args": {"connect_timeout": int(timeout)}}
        engine = make_engine(url, **kwargs)
    except ModuleNotFoundError as e:
        advice = missing_extra_message(e)
        raise ConfigError(f"STOKER_DB_URL={shown}: {advice or e}") from None
    except ArgumentError as e:
        raise ConfigError(f"STOKER_DB_URL={shown} is not a database URL ({e}): use "
                          "postgresql://user:password@host/db or sqlite:////absolute/path.db") from None
    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
    except SQLAlchemyError as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise PlatformUnavailable(f"cannot reach the ledger database STOKER_DB_URL={shown} ({reason}): "
                                  "start it, or fix STOKER_DB_URL") from None
    finally:
        engine.dispose()
