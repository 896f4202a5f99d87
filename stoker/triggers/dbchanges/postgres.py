"""The change log on PostgreSQL: a plpgsql row trigger, JSONB images, snapshot windows, LISTEN/NOTIFY.

One trigger function per schema (`stoker_capture_changes`, SECURITY DEFINER so that the
application's role needs no rights on stoker's tables) serves every watched table of
that schema; each table's trigger passes it the table's name, key columns and captured
columns. It appends one row per change with the writing transaction's id, and notifies
channel `stoker_changes` (payload `schema.table`), which PostgreSQL delivers on commit.
Needs PostgreSQL 13 or newer (`pg_current_xact_id`, `pg_snapshot`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text

from stoker.errors import ConfigError
from stoker.triggers.dbchanges.changelog import (
    CHANGES,
    CURSORS,
    WATCHES,
    Batch,
    ChangeLog,
    DatabaseError,
    Position,
    WatchResult,
    captured_columns,
    change_from_row,
)

TRIGGER = "stoker_capture_changes"
FUNCTION = "stoker_capture_changes"
CHANNEL = "stoker_changes"

FUNCTION_BODY = """
DECLARE
  key_cols text[] := ARRAY(SELECT jsonb_array_elements_text(TG_ARGV[1]::jsonb));
  old_row jsonb;
  new_row jsonb;
BEGIN
  IF TG_OP <> 'INSERT' THEN
    old_row := to_jsonb(OLD);
  END IF;
  IF TG_OP <> 'DELETE' THEN
    new_row := to_jsonb(NEW);
  END IF;
  IF TG_ARGV[2] <> '' THEN
    old_row := (SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(old_row) AS e
                WHERE e.key IN (SELECT jsonb_array_elements_text(TG_ARGV[2]::jsonb)));
    new_row := (SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(new_row) AS e
                WHERE e.key IN (SELECT jsonb_array_elements_text(TG_ARGV[2]::jsonb)));
  END IF;
  IF TG_OP = 'UPDATE' AND old_row = new_row THEN
    RETURN NULL; -- nothing captured changed (as DynamoDB, which writes no record then)
  END IF;
  INSERT INTO {changes} (table_name, op, old_keys, new_keys, old_row, new_row)
  VALUES (TG_ARGV[0], TG_OP,
          (SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(old_row) AS e WHERE e.key = ANY (key_cols)),
          (SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(new_row) AS e WHERE e.key = ANY (key_cols)),
          old_row, new_row);
  PERFORM pg_notify('{channel}', TG_ARGV[3]);
  RETURN NULL;
END
"""

READ = """
SELECT seq, op, old_keys::text, new_keys::text, old_row::text, new_row::text,
       extract(epoch FROM changed_at)::float8
FROM {changes}
WHERE table_name = :t AND seq > :after AND op = ANY(:ops)
  AND pg_visible_in_snapshot(txid, CAST(:window AS pg_snapshot)) {not_in_horizon}
ORDER BY seq LIMIT :n
"""
NOT_IN_HORIZON = "AND NOT pg_visible_in_snapshot(txid, CAST(:horizon AS pg_snapshot))"


class PostgresChangeLog(ChangeLog):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._resolved: tuple[str, str] | None = None

    def _make_engine(self) -> Engine:
        # keepalives and a statement timeout: a database behind a broken network fails, never hangs
        return create_engine(self.target.url, pool_pre_ping=True, pool_size=2, max_overflow=2, connect_args={
            "connect_timeout": 5, "application_name": "stoker-dbchanges", "keepalives": 1, "keepalives_idle": 30,
            "keepalives_interval": 10, "keepalives_count": 3, "options": "-c statement_timeout=60000"})

    # -- names --------------------------------------------------------------------------
    def _quote(self, name: str) -> str:
        return str(self.engine.dialect.identifier_preparer.quote_identifier(name))

    def resolve(self, conn: Connection | None = None) -> tuple[str, str]:
        """(schema, table) of the watched table, as the catalog names them."""
        if self._resolved is None:
            if conn is None:
                with self.guard("looking up"), self.engine.connect() as c:
                    return self.resolve(c)
            row = conn.execute(text(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = to_regclass(:name) AND c.relkind IN ('r', 'p')"), {"name": self.target.table}).first()
            if row is None:
                raise ConfigError(f"{self.target.describe()}: no such table (names are case-folded to lower "
                                  "case as in SQL; check the table and the database in the URL)")
            self._resolved = (str(row[0]), str(row[1]))
        return self._resolved

    def table_name(self) -> str:
        return self.resolve()[1]

    def qualified(self) -> str:
        return ".".join(self.resolve())

    def t(self, name: str) -> str:
        return f"{self._quote(self.resolve()[0])}.{self._quote(name)}"

    def _has_log(self, conn: Connection) -> bool:
        self.resolve(conn)
        return conn.execute(text("SELECT to_regclass(:n) IS NOT NULL"),
                            {"n": f"{self.t(WATCHES)}"}).scalar_one() is True

    # -- install ------------------------------------------------------------------------
    def _ddl(self) -> list[str]:
        schema = self._quote(self.resolve()[0])
        body = FUNCTION_BODY.replace("{changes}", self.t(CHANGES)).replace("{channel}", CHANNEL)
        return [
            f"CREATE TABLE IF NOT EXISTS {self.t(CHANGES)} ("
            " seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, table_name text NOT NULL, op text NOT NULL,"
            " old_keys jsonb, new_keys jsonb, old_row jsonb, new_row jsonb,"
            " txid xid8 NOT NULL DEFAULT pg_current_xact_id(),"
            " changed_at timestamptz NOT NULL DEFAULT clock_timestamp())",
            f"CREATE INDEX IF NOT EXISTS stoker_changes_table_seq ON {self.t(CHANGES)} (table_name, seq)",
            f"CREATE TABLE IF NOT EXISTS {self.t(CURSORS)} ("
            " table_name text NOT NULL, consumer text NOT NULL, token text NOT NULL, version bigint NOT NULL,"
            " horizon text, page text, after_seq bigint NOT NULL, updated_at double precision NOT NULL,"
            " PRIMARY KEY (table_name, consumer))",
            f"CREATE TABLE IF NOT EXISTS {self.t(WATCHES)} ("
            " table_name text PRIMARY KEY, key_columns text NOT NULL, columns text,"
            " watched_at double precision NOT NULL)",
            f"CREATE OR REPLACE FUNCTION {schema}.{FUNCTION}() RETURNS trigger LANGUAGE plpgsql "
            f"SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $stoker${body}$stoker$",
        ]

    def _columns(self, conn: Connection, oid: int) -> tuple[list[str], list[str]]:
        keys = [r[0] for r in conn.execute(text(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = :oid AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)"), {"oid": oid})]
        names = [r[0] for r in conn.execute(text(
            "SELECT attname FROM pg_attribute WHERE attrelid = :oid AND attnum > 0 AND NOT attisdropped "
            "ORDER BY attnum"), {"oid": oid})]
        return keys, names

    def install(self, columns: list[str] | None) -> WatchResult:
        with self.begin("watching") as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('stoker_watch'))"))
            # creating a trigger locks the table against writes: never queue behind a long transaction
            conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
            schema, table = self.resolve(conn)
            oid = conn.execute(text("SELECT to_regclass(:n)::oid"), {"n": self.qualified_quoted()}).scalar_one()
            keys, names = self._columns(conn, oid)
            captured = captured_columns(self.target.describe(), keys, names, columns)
            args = [table, json.dumps(keys), json.dumps(captured) if captured else "", f"{schema}.{table}"]
            if self._installed_as(conn, oid, args, keys, captured):
                return WatchResult(table, keys, captured, changed=False)
            for statement in self._ddl():
                conn.exec_driver_sql(statement)
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {self.qualified_quoted()}")
            literal = ", ".join("'" + a.replace("'", "''") + "'" for a in args)
            conn.exec_driver_sql(
                f"CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {self.qualified_quoted()} "
                f"FOR EACH ROW EXECUTE FUNCTION {self._quote(schema)}.{FUNCTION}({literal})")
            conn.execute(text(
                f"INSERT INTO {self.t(WATCHES)} (table_name, key_columns, columns, watched_at) "
                "VALUES (:t, :k, :c, :now) ON CONFLICT (table_name) DO UPDATE SET key_columns = excluded.key_columns,"
                " columns = excluded.columns, watched_at = excluded.watched_at"),
                {"t": table, "k": json.dumps(keys), "c": json.dumps(captured) if captured else None,
                 "now": time.time()})
        return WatchResult(table, keys, captured, changed=True)

    def qualified_quoted(self) -> str:
        schema, table = self.resolve()
        return f"{self._quote(schema)}.{self._quote(table)}"

    def _installed_as(self, conn: Connection, oid: int, args: list[str], keys: list[str],
                      captured: list[str] | None) -> bool:
        if not self._has_log(conn):
            return False
        tgargs = conn.execute(text(
            "SELECT tgargs FROM pg_trigger WHERE tgrelid = :oid AND tgname = :name AND NOT tgisinternal"),
            {"oid": oid, "name": TRIGGER}).scalar()
        if tgargs is None or bytes(tgargs) != b"".join(a.encode() + b"\x00" for a in args):
            return False
        body = self._ddl()[-1].split("$stoker$")[1]
        same_function = conn.execute(text(
            "SELECT p.prosrc = :body FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE p.proname = :f AND n.nspname = :s"), {"body": body, "f": FUNCTION, "s": self.resolve()[0]}).scalar()
        watch = conn.execute(text(f"SELECT key_columns, columns FROM {self.t(WATCHES)} WHERE table_name = :t"),
                             {"t": self.table_name()}).first()
        return bool(same_function) and watch is not None and tuple(watch) == (
            json.dumps(keys), json.dumps(captured) if captured else None)

    def uninstall(self) -> bool:
        with self.begin("unwatching") as conn:
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('stoker_watch'))"))
            conn.exec_driver_sql("SET LOCAL lock_timeout = '10s'")
            self.resolve(conn)
            had_trigger = conn.execute(text(
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(:n) AND tgname = :name"),
                {"n": self.qualified_quoted(), "name": TRIGGER}).scalar_one() > 0
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {TRIGGER} ON {self.qualified_quoted()}")
            if not self._has_log(conn):
                return had_trigger
            params = {"t": self.table_name()}
            found = conn.execute(text(f"DELETE FROM {self.t(WATCHES)} WHERE table_name = :t"), params).rowcount
            conn.execute(text(f"DELETE FROM {self.t(CURSORS)} WHERE table_name = :t"), params)
            conn.execute(text(f"DELETE FROM {self.t(CHANGES)} WHERE table_name = :t"), params)
            if conn.execute(text(f"SELECT count(*) FROM {self.t(WATCHES)}")).scalar_one() == 0:
                for name in (CHANGES, CURSORS, WATCHES):
                    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {self.t(name)}")
                conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {self._quote(self.resolve()[0])}.{FUNCTION}()")
            return had_trigger or found > 0

    def watches(self) -> list[dict[str, Any]]:
        with self.guard("reading the watches of"), self.engine.connect() as conn:
            schemas = [r[0] for r in conn.execute(text(
                "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relname = :w AND c.relkind = 'r' ORDER BY 1"), {"w": WATCHES})]
            return [w for schema in schemas for w in self._watches_in(conn, schema)]

    def _watches_in(self, conn: Connection, schema: str) -> list[dict[str, Any]]:
        def t(name: str) -> str:
            return f"{self._quote(schema)}.{self._quote(name)}"

        out = []
        for table, keys, columns, watched_at in conn.execute(text(
                f"SELECT table_name, key_columns, columns, watched_at FROM {t(WATCHES)} ORDER BY 1")).all():
            consumers = []
            for consumer, horizon, page, after, updated in conn.execute(text(
                    f"SELECT consumer, horizon, page, after_seq, updated_at FROM {t(CURSORS)} "
                    "WHERE table_name = :t ORDER BY consumer"), {"t": table}).all():
                unread = conn.execute(text(
                    f"SELECT count(*) FROM {t(CHANGES)} WHERE table_name = :t "
                    "AND (CAST(:h AS text) IS NULL OR NOT pg_visible_in_snapshot(txid, CAST(:h AS pg_snapshot))) "
                    "AND NOT (CAST(:p AS text) IS NOT NULL AND seq <= :a "
                    "AND pg_visible_in_snapshot(txid, CAST(:p AS pg_snapshot)))"),
                    {"t": table, "h": horizon, "p": page, "a": after}).scalar_one()
                consumers.append({"consumer": consumer, "unread": unread, "updated_at": updated})
            retained = conn.execute(text(f"SELECT count(*) FROM {t(CHANGES)} WHERE table_name = :t"),
                                    {"t": table}).scalar_one()
            out.append({"table": f"{schema}.{table}", "key_columns": json.loads(keys),
                        "columns": json.loads(columns) if columns else None, "watched_at": watched_at,
                        "retained": retained, "consumers": consumers})
        return out

    # -- reading ------------------------------------------------------------------------
    def read(self, position: Position, limit: int, ops: Sequence[str]) -> Batch:
        with self.begin("reading the change log of") as conn:
            window = position.window or conn.execute(text("SELECT pg_current_snapshot()::text")).scalar_one()
            sql = READ.format(changes=self.t(CHANGES), not_in_horizon=NOT_IN_HORIZON if position.horizon else "")
            params: dict[str, Any] = {"t": self.table_name(), "after": position.after_seq, "ops": list(ops),
                                      "window": window, "n": limit + 1}
            if position.horizon:
                params["horizon"] = position.horizon
            rows = conn.execute(text(sql), params).all()
        changes = [change_from_row(r) for r in rows[:limit]]
        return Batch(changes, exhausted=len(rows) <= limit, window=window)

    def _json(self, column: str) -> str:
        return f"{column}::text"  # parsed by stoker, keeping numbers exact

    def _epoch(self, column: str) -> str:
        return f"extract(epoch FROM {column})::float8"

    def position_after(self, position: Position, batch: Batch, count: int) -> Position:
        if count == len(batch.changes) and batch.exhausted:
            return Position(horizon=batch.window, window=None, after_seq=0)
        return Position(position.horizon, batch.window, batch.changes[count - 1].seq)

    def _start_position(self, conn: Connection, start: str) -> Position:
        if start == "latest":
            return Position(horizon=conn.execute(text("SELECT pg_current_snapshot()::text")).scalar_one())
        return Position()

    def _trim(self, conn: Connection, live_since: float) -> int:
        # txid < xmin(horizon) means the transaction was visible in that consumer's horizon;
        # a consumer with no horizon yet (NULL) makes `< ALL` unknown, so nothing is deleted
        result = conn.execute(text(
            f"DELETE FROM {self.t(CHANGES)} WHERE table_name = :t "
            f"AND EXISTS (SELECT 1 FROM {self.t(CURSORS)} WHERE table_name = :t AND updated_at > :live) "
            f"AND txid < ALL (SELECT pg_snapshot_xmin(CAST(horizon AS pg_snapshot)) FROM {self.t(CURSORS)} "
            "WHERE table_name = :t AND updated_at > :live)"), {"t": self.table_name(), "live": live_since})
        return int(result.rowcount or 0)


class Notifier:
    """Waits for the change log's NOTIFY for one table, on its own autocommit connection."""

    def __init__(self, log: PostgresChangeLog) -> None:
        self.log = log
        self._conn: Any = None

    async def wait(self, timeout: float) -> bool:
        """True when the table changed (or may have); False on timeout."""
        import psycopg

        if self._conn is None or self._conn.closed:
            conninfo = self.log.target.url.set(drivername="postgresql").render_as_string(hide_password=False)
            try:
                self._conn = await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True, connect_timeout=5, application_name="stoker-dbchanges",
                    keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
                await self._conn.execute(f"LISTEN {CHANNEL}")
            except psycopg.Error as e:
                await self.close()
                raise DatabaseError(self.log.target.scrub(f"listening on {self.log.target.describe()} failed: "
                                                          f"{type(e).__name__}: {e}")) from None
            return True  # changes may have committed before LISTEN: look once
        wanted = await asyncio.to_thread(self.log.qualified)
        deadline = time.monotonic() + timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                async for note in self._conn.notifies(timeout=left, stop_after=1):
                    if note.payload == wanted:
                        return True
        except psycopg.Error:
            await self.close()
            return True
        return False

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection: nothing left to do
                await self._conn.close()
            self._conn = None
