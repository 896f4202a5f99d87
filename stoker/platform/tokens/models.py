"""The `tokens` table: one row per token ever created (revoked ones stay, for the record).

Only the SHA-256 of a token is stored; the token itself is shown once, at creation.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Index, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column

from stoker.platform.db import Base, UTCDateTime


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    #: hex SHA-256 of the token
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    rights: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(64))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        # a name is unique among live tokens; a revoked token's name may be used again
        Index("ix_tokens_live_name", "name", unique=True, sqlite_where=text("revoked_at IS NULL"),
              postgresql_where=text("revoked_at IS NULL")),
    )
