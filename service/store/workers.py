"""Worker registry rows: started, heartbeat, stopped."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession


async def register_worker(
    *, session: AsyncSession, worker_id: str, host: str, pid: int, concurrency: int
) -> None:
    """Insert (or revive) this process's worker row."""
    await session.execute(
        text(
            "INSERT INTO workers (id, host, pid, concurrency, status) "
            "VALUES (:id, :host, :pid, :concurrency, 'running') "
            "ON CONFLICT (id) DO UPDATE SET status = 'running', heartbeat_at = now()"
        ),
        {"id": worker_id, "host": host, "pid": pid, "concurrency": concurrency},
    )


async def heartbeat_worker(
    *,
    session: AsyncSession,
    worker_id: str,
    in_flight: int,
    providers: list[dict[str, Any]] | None = None,
) -> None:
    """Mark this worker alive with its in-flight count (again, if it was taken for dead) and
    its provider pools' snapshot (None: it has no pools)."""
    await session.execute(
        text(
            "UPDATE workers SET heartbeat_at = now(), in_flight = :n, providers = :providers, "
            "status = CASE WHEN status = 'dead' THEN 'running' ELSE status END WHERE id = :id"
        ).bindparams(bindparam("providers", type_=JSONB(none_as_null=True))),
        {"id": worker_id, "n": in_flight, "providers": providers},
    )


async def stop_worker(*, session: AsyncSession, worker_id: str) -> None:
    """Mark this worker stopped."""
    await session.execute(
        text(
            "UPDATE workers SET status = 'stopped', in_flight = 0, heartbeat_at = now() "
            "WHERE id = :id"
        ),
        {"id": worker_id},
    )
