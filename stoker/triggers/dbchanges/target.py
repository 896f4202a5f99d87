"""The user's database and table a dbchanges trigger watches, named without credentials.

A URL is a SQLAlchemy URL: `postgresql://…` (psycopg 3) or `sqlite:////absolute/path.db`.
Whatever is logged, shown or sent to a function (the ARN in every record) is built from
`safe_url` or `location`, never from the URL itself, so a password never leaves it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from stoker.errors import ConfigError
from stoker.settings import normalise_db_url

#: a table as SQL writes it unquoted: `orders`, or `sales.orders` with a PostgreSQL schema
TABLE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}(\.[A-Za-z_][A-Za-z0-9_$]{0,62})?$")
URL_EXAMPLES = "postgresql://user:password@host:5432/dbname or sqlite:////absolute/path/to/file.db"


def parse_url(raw: object, folder: str | None = None) -> URL:
    """A checked URL of a supported database; a relative SQLite path resolves against `folder`."""
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"url must be a database URL, e.g. {URL_EXAMPLES}")
    try:
        url = make_url(normalise_db_url(raw.strip()))
    except (ArgumentError, ValueError):
        # never echo the text: it may hold a password
        raise ConfigError(f"url is not a database URL: write it as {URL_EXAMPLES}") from None
    backend = url.get_backend_name()
    if backend == "postgresql":
        if url.get_driver_name() != "psycopg":
            raise ConfigError(f"url {safe(url)}: stoker talks to PostgreSQL with psycopg 3; "
                              "write the URL as postgresql://user:password@host:5432/dbname")
        if not url.database:
            raise ConfigError(f"url {safe(url)} names no database: add /dbname at its end")
        return url
    if backend == "sqlite":
        path = url.database or ""
        if path in ("", ":memory:") or path.startswith("file:"):
            raise ConfigError("url names an in-memory SQLite database, which no other process can watch: "
                              "give a file, e.g. sqlite:////absolute/path/to/file.db")
        if not Path(path).is_absolute():
            if folder is None:
                raise ConfigError(f"url {safe(url)} is a relative path, which the platform cannot resolve: "
                                  "give an absolute path (four slashes: sqlite:////absolute/path/to/file.db)")
            url = url.set(database=str((Path(folder) / path).resolve()))
        return url
    raise ConfigError(f"url {safe(url)}: {backend!r} databases are not supported; use PostgreSQL or SQLite "
                      f"({URL_EXAMPLES})")


def safe(url: URL) -> str:
    """The URL as it may be shown: the password replaced by ***."""
    return url.render_as_string(hide_password=True)


def check_table(table: object, url: URL) -> str:
    if not isinstance(table, str) or not TABLE_RE.match(table):
        raise ConfigError(f"table {table!r} is not a table name: write it as SQL does unquoted, e.g. "
                          "\"orders\" (or \"sales.orders\" for a PostgreSQL schema)")
    if "." in table and url.get_backend_name() == "sqlite":
        raise ConfigError(f"table {table!r}: SQLite tables have no schema; give the bare name")
    return table


@dataclass(frozen=True)
class Target:
    """One watched table of one database."""

    url: URL
    table: str

    @classmethod
    def parse(cls, url: object, table: object, folder: str | None = None) -> Target:
        parsed = parse_url(url, folder)
        return cls(parsed, check_table(table, parsed))

    @classmethod
    def database(cls, url: object, folder: str | None = None) -> Target:
        """The whole database, for what concerns all its watched tables (table is "")."""
        return cls(parse_url(url, folder), "")

    @property
    def dialect(self) -> str:
        return str(self.url.get_backend_name())

    @property
    def safe_url(self) -> str:
        return safe(self.url)

    @property
    def location(self) -> str:
        """Where the database is, without user or password: `host:port/dbname`, or the SQLite file."""
        if self.dialect == "sqlite":
            return str(self.url.database)
        return f"{self.url.host or 'localhost'}:{self.url.port or 5432}/{self.url.database}"

    @property
    def arn(self) -> str:
        """The eventSourceARN of every record, shaped like a DynamoDB stream's."""
        return f"arn:stoker:db:{self.dialect}:{self.location}:table/{self.table}/stream"

    def describe(self) -> str:
        return f"table {self.table} in {self.safe_url}" if self.table else self.safe_url

    def scrub(self, text: str) -> str:
        """A driver's message with the password taken out, should it quote the connection string."""
        password = self.url.password
        if password:
            text = text.replace(str(password), "***")
        return text
