"""Alembic environment for the read model.

`Store.open` runs migrations in-process and hands its connection over in
`config.attributes["connection"]`. The `alembic` CLI (for writing a new revision:
`alembic -c store/alembic.ini revision --autogenerate --rev-id 0002 -m "..."`) has no
connection, so one is made from DATABASE_URL, or the default SQLite file.
Logging is left alone on purpose: the application owns its configuration.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection

from store.db import create_engine, normalize_url
from store.tables import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )


def do_run_migrations(connection: Connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_cli() -> None:
    engine = create_engine(normalize_url(os.environ.get("DATABASE_URL")))
    try:
        async with engine.connect() as conn:
            await conn.run_sync(do_run_migrations)
            await conn.commit()
    finally:
        await engine.dispose()


def run_migrations_offline() -> None:
    """`alembic upgrade head --sql`: print the DDL instead of running it."""
    context.configure(
        url=normalize_url(os.environ.get("DATABASE_URL")),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(_run_from_cli())
    else:
        do_run_migrations(connection)


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
