"""Alembic environment. Runs from the installed package, so `stoker db migrate` works
from a non-editable install; the URL comes from the caller's config (stoker.platform.db)."""

from __future__ import annotations

from alembic import context

from stoker.platform.db import Base, make_engine
from stoker.platform.ledger import models as _ledger_models  # noqa: F401  (registers tables)
from stoker.platform.registry import models as _registry_models  # noqa: F401
from stoker.platform.tokens import models as _token_models  # noqa: F401

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=target_metadata,
                              render_as_batch=connection.dialect.name == "sqlite")
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
