"""Import bookkeeping: one row per file, the committed position, and batch story inserts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.models import Story


async def open_import(
    *, session: AsyncSession, path: str, size: int, head_sha256: str, fmt: str
) -> dict[str, Any]:
    """The import row of this file (created on first sight), locked for this transaction."""
    await session.execute(
        text(
            "INSERT INTO imports (path, size, head_sha256, format) VALUES (:p, :s, :h, :f) "
            "ON CONFLICT ON CONSTRAINT uq_imports_file DO NOTHING"
        ),
        {"p": path, "s": size, "h": head_sha256, "f": fmt},
    )
    row = (
        await session.execute(
            text(
                "SELECT id, status, next_record, next_offset, inserted, duplicates FROM imports "
                "WHERE path = :p AND size = :s AND head_sha256 = :h FOR UPDATE"
            ),
            {"p": path, "s": size, "h": head_sha256},
        )
    ).one()
    return dict(row._mapping)


async def insert_stories(*, session: AsyncSession, stories: Sequence[dict[str, Any]]) -> list[int]:
    """Insert one batch (executemany, RETURNING ids in parameter order)."""
    if not stories:
        return []
    result = await session.execute(
        insert(Story).returning(Story.id, sort_by_parameter_order=True), list(stories)
    )
    return [row[0] for row in result]


async def advance_import(
    *,
    session: AsyncSession,
    import_id: int,
    next_record: int,
    next_offset: int,
    inserted: int,
    duplicates: int,
) -> None:
    """Commit point of a batch: the file position after it and the counters."""
    await session.execute(
        text(
            "UPDATE imports SET next_record = :r, next_offset = :o, inserted = inserted + :i, "
            "duplicates = duplicates + :d, status = 'running', error = NULL, updated_at = now() "
            "WHERE id = :id"
        ),
        {"id": import_id, "r": next_record, "o": next_offset, "i": inserted, "d": duplicates},
    )


async def end_import(
    *, session: AsyncSession, import_id: int, status: str, error: str | None = None
) -> None:
    await session.execute(
        text("UPDATE imports SET status = :st, error = :e, updated_at = now() WHERE id = :id"),
        {"id": import_id, "st": status, "e": error},
    )
