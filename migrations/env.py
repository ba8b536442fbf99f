"""Alembic environment: async engine on psycopg 3, metadata from service.store.models."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

import service.store.models_api  # registers the API's tables on Base
import service.store.models_batch  # provider batches
import service.store.models_dataset  # registers the dataset-quality tables on Base
import service.store.models_diversity  # noqa: F401 - diversity tables, browser indexes
from service.store.models import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if url:
        from service.db import normalize_url

        return normalize_url(url)
    from service.db import resolve_database_url
    from service.settings import Settings

    return resolve_database_url(Settings())


def run_migrations_offline() -> None:
    """Emit SQL without a connection."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


# Processes starting together (API, workers) may all upgrade: one at a time.
MIGRATION_LOCK_KEY = 0x7453_4D49_4752  # "tSMIGR"


def _run_sync(connection: Connection) -> None:
    from sqlalchemy import text

    connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlalchemy.pool import NullPool

    engine = create_async_engine(_url(), poolclass=NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run_sync)
        # The lock query began the transaction alembic joined: commit it (and the lock ends).
        await connection.commit()
    await engine.dispose()


def run_migrations_online() -> None:
    """Run against a live database through the async engine."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_sync(connection)
        return
    asyncio.run(_run_async())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
