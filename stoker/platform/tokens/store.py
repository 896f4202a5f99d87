"""Tokens in SQL (the truth) and their projection into Redis (what gateways read).

A token is `stk_` and 43 URL-safe characters; only its SHA-256 is stored. Gateways look
tokens up by that hash in the Redis projection, cache the answer, and drop the cache on
every change (pub/sub), so a revoked token stops working at once and checking a token
costs no database query. Looking up by a hash of the token means no comparison ever
runs over the token itself, so response times reveal nothing about valid tokens.

Redis keys (owned here):
    {p}:tokens            hash: sha256 hex -> {"name", "rights"} (json) of every live token;
                          field "*" marks a complete projection (absent: rebuild from SQL)
    {p}:tokens:changes    counter bumped by every create and revoke (a rebuild WATCHes it)
    {p}:tokens:changed    pub/sub channel: a token was created or revoked
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import WatchError
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from stoker.errors import Conflict, InvalidInput, NotFound
from stoker.platform.keys import Keys
from stoker.platform.tokens.models import Token

#: what a token may do; "admin" may do everything, including managing tokens
RIGHTS = ("admin", "deploy", "invoke", "read")
RIGHT_HELP = ("admin: everything, including tokens; deploy: deploy, aliases, rollback, delete; "
              "invoke: call functions; read: list functions, the ledger and logs")
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
#: the name the admin token (STOKER_TOKEN) acts as
ADMIN_NAME = "admin"
COMPLETE = b"*"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "stk_" + secrets.token_urlsafe(32)


def check_rights(rights: list[str]) -> list[str]:
    if not rights:
        raise InvalidInput(f"give the token at least one right: {', '.join(RIGHTS)} ({RIGHT_HELP})")
    unknown = [r for r in rights if r not in RIGHTS]
    if unknown:
        raise InvalidInput(f"unknown right(s) {', '.join(map(repr, unknown))}: use {', '.join(RIGHTS)} "
                           f"({RIGHT_HELP})")
    return sorted(set(rights))


@dataclass(frozen=True)
class TokenInfo:
    name: str
    rights: list[str]
    created_at: dt.datetime
    created_by: str | None
    revoked_at: dt.datetime | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "rights": list(self.rights), "created_at": self.created_at.isoformat(),
                "created_by": self.created_by,
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


def _info(row: Token) -> TokenInfo:
    return TokenInfo(name=row.name, rights=list(row.rights), created_at=row.created_at, created_by=row.created_by,
                     revoked_at=row.revoked_at)


class TokenStore:
    """The SQL side (synchronous; async callers run it in a thread)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(self, name: str, rights: list[str], created_by: str | None) -> tuple[TokenInfo, str]:
        """A new token; returns it with its secret, which is not stored and cannot be shown again."""
        if not NAME_RE.match(name):
            raise InvalidInput(f"token name {name!r} is not valid: use 1-64 letters, digits, '.', '-' or '_'")
        if name == ADMIN_NAME:
            raise InvalidInput(f"{ADMIN_NAME!r} is the name of the admin token (STOKER_TOKEN); choose another")
        clean = check_rights(rights)
        secret = new_token()
        try:
            with Session(self.engine) as session, session.begin():
                live = session.scalars(select(Token).where(Token.name == name, Token.revoked_at.is_(None))).first()
                if live is not None:
                    raise Conflict(f"a token named {name!r} exists already: revoke it first "
                                   f"(stoker token revoke {name}) or choose another name")
                row = Token(name=name, hash=token_hash(secret), rights=clean, created_at=dt.datetime.now(dt.UTC),
                            created_by=created_by, revoked_at=None)
                session.add(row)
                session.flush()
                return _info(row), secret
        except IntegrityError:
            raise Conflict(f"a token named {name!r} was just created by someone else; choose another name") from None

    def all(self, include_revoked: bool = False) -> list[TokenInfo]:
        with Session(self.engine) as session:
            query = select(Token).order_by(Token.name, Token.id)
            if not include_revoked:
                query = query.where(Token.revoked_at.is_(None))
            return [_info(r) for r in session.scalars(query)]

    def revoke(self, name: str) -> tuple[TokenInfo, str]:
        """Revoke the live token of that name; returns it and its hash."""
        with Session(self.engine) as session, session.begin():
            row = session.scalars(select(Token).where(Token.name == name, Token.revoked_at.is_(None))
                                  .with_for_update()).first()
            if row is None:
                raise NotFound(f"no live token named {name!r}: see `stoker token list`")
            row.revoked_at = dt.datetime.now(dt.UTC)
            session.flush()
            return _info(row), row.hash

    def live(self) -> dict[str, tuple[str, list[str]]]:
        """hash -> (name, rights) of every live token."""
        with Session(self.engine) as session:
            rows = session.scalars(select(Token).where(Token.revoked_at.is_(None)))
            return {r.hash: (r.name, list(r.rights)) for r in rows}


# -- the Redis projection -----------------------------------------------------------------

def tokens_key(keys: Keys) -> str:
    return keys.custom("tokens")


def tokens_channel(keys: Keys) -> str:
    return keys.custom("tokens", "changed")


def _entry(name: str, rights: list[str]) -> bytes:
    return orjson.dumps({"name": name, "rights": rights})


def changes_key(keys: Keys) -> str:
    return keys.custom("tokens", "changes")


async def project_all(redis: aioredis.Redis, keys: Keys,
                      read_live: Callable[[], Awaitable[dict[str, tuple[str, list[str]]]]]) -> None:
    """Rebuild the projection from SQL's live tokens, atomically.

    A token created or revoked while SQL is being read bumps `{p}:tokens:changes`, which
    this rebuild WATCHes: it then reads SQL again, so it never writes back a token revoked
    meanwhile (nor drops one just created).
    """
    async with redis.pipeline(transaction=True) as pipe:
        while True:
            try:
                await pipe.watch(changes_key(keys))
                live = await read_live()
                pipe.multi()
                pipe.delete(tokens_key(keys))
                mapping: dict[Any, Any] = {h: _entry(n, r) for h, (n, r) in live.items()}
                mapping[COMPLETE] = b"1"
                pipe.hset(tokens_key(keys), mapping=mapping)
                pipe.publish(tokens_channel(keys), b"*")
                await pipe.execute()
                return
            except WatchError:
                continue


async def project_one(redis: aioredis.Redis, keys: Keys, digest: str, name: str, rights: list[str]) -> None:
    pipe = redis.pipeline(transaction=True)
    pipe.hset(tokens_key(keys), digest, _entry(name, rights))
    pipe.incr(changes_key(keys))
    pipe.publish(tokens_channel(keys), digest)
    await pipe.execute()


async def unproject_one(redis: aioredis.Redis, keys: Keys, digest: str) -> None:
    pipe = redis.pipeline(transaction=True)
    pipe.hdel(tokens_key(keys), digest)
    pipe.incr(changes_key(keys))
    pipe.publish(tokens_channel(keys), digest)
    await pipe.execute()


async def lookup(redis: aioredis.Redis, keys: Keys, digest: str) -> tuple[dict[str, Any] | None, bool]:
    """(the token's entry or None, whether the projection is complete)."""
    raw, complete = await redis.hmget(tokens_key(keys), [digest, COMPLETE])
    return (orjson.loads(raw) if raw else None), complete is not None
