"""Database URL resolution, async engine and session factory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import TextClause
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from service.settings import Settings

logger = logging.getLogger(__name__)
T = TypeVar("T")


def normalize_url(url: str) -> str:
    """Use the psycopg 3 driver whatever scheme the user wrote."""
    for prefix in (
        "postgresql+psycopg://",
        "postgresql+asyncpg://",
        "postgresql://",
        "postgres://",
    ):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    raise ValueError("DATABASE_URL must be a postgresql:// URL")


def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL if set, else the embedded server under TINYSTORIES_HOME (started on demand)."""
    if settings.database_url:
        return normalize_url(settings.database_url)
    from service.pgserver import embedded_url

    return embedded_url(settings.pg_dir, extra_options=settings.pg_extra_options)


def make_engine(
    url: str,
    *,
    pool_size: int = 10,
    durable: bool = True,
    pre_ping: bool = True,
    application_name: str | None = None,
) -> AsyncEngine:
    """Async engine; pre-ping so connections broken by a database restart are replaced.

    `durable=False` turns off synchronous commit for its sessions: for short bookkeeping
    (rate buckets, budget reservations) whose loss in a Postgres crash only frees capacity.
    `pre_ping=False` saves a round trip per checkout for callers that retry every operation
    with `with_reconnect` (the first failure invalidates the whole pool).
    """
    connect_args: dict[str, str] = {} if durable else {"options": "-c synchronous_commit=off"}
    if application_name:  # shown in pg_stat_activity: which process holds what
        connect_args["application_name"] = application_name
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_recycle=1800,
        connect_args=connect_args,
    )


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded values after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def autocommit(session: AsyncSession) -> None:
    """Run the session's next statement as its own transaction.

    For single statements on a hot row (a rate bucket, a job's budget): the row lock ends with
    the statement instead of waiting for this process's event loop to send COMMIT while every
    other worker queues behind it.
    """
    await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


_compiled: dict[TextClause, str] = {}  # module-level statements, compiled once


async def execute_and_commit(
    session: AsyncSession, statements: Sequence[tuple[TextClause, Mapping[str, Any]]]
) -> None:
    """Send the statements and COMMIT together, in one round trip (a psycopg pipeline).

    For the last statements of a transaction that lock rows every worker shares (a job's
    counters, its rollup row): sent one by one, each lock would also be held while this
    process's busy event loop gets round to sending the next statement and then COMMIT. The
    session's transaction is over when this returns; the session's own commit finds nothing
    left to do.
    """
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    pg = raw.driver_connection
    async with pg.pipeline():
        async with pg.cursor() as cur:
            for stmt, params in statements:
                sql = _compiled.get(stmt)
                if sql is None:
                    sql = _compiled[stmt] = str(stmt.compile(dialect=conn.dialect))
                await cur.execute(sql, params)
        await pg.commit()


def is_disconnect(exc: BaseException) -> bool:
    """True for errors a database restart or network blip causes."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError | ConnectionError | OSError)


async def with_reconnect(
    op: Callable[[], Awaitable[T]],
    *,
    what: str,
    give_up_s: float = 300.0,
    stop: Callable[[], bool] | None = None,
) -> T:
    """Run `op` again while the database is unreachable, with capped backoff."""
    delay = 0.1
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_s
    while True:
        try:
            return await op()
        except Exception as exc:
            if not is_disconnect(exc) or loop.time() > deadline or (stop and stop()):
                raise
            logger.warning(
                "database unavailable op=%s error=%s retry_in=%.1fs",
                what,
                type(exc).__name__,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
