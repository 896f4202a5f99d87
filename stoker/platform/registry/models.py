"""Registry tables: functions, versions (immutable), aliases."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from stoker.platform.db import Base, UTCDateTime


class Function(Base):
    __tablename__ = "functions"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    latest_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class Version(Base):
    __tablename__ = "versions"

    function: Mapped[str] = mapped_column(String(64), ForeignKey("functions.name", ondelete="CASCADE"),
                                          primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    deployed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    deployed_by: Mapped[str | None] = mapped_column(String(128))

    __table_args__ = (Index("ix_versions_hash", "function", "code_hash"),)


class Alias(Base):
    __tablename__ = "aliases"

    function: Mapped[str] = mapped_column(String(64), ForeignKey("functions.name", ondelete="CASCADE"),
                                          primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    #: additional version -> share of invocations (Lambda's AdditionalVersionWeights)
    weights: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)
    #: earlier states, newest last: [{"version": 1, "weights": {}}], for rollback
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
