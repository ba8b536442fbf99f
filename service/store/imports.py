"""Import bookkeeping (one row per file, the committed position), batch story inserts, and the
binary bulk writes (COPY, bigint[] parameters) the import and dedup stores share."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
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


_JSON_COLUMNS = {"features", "checks", "rejection_reasons"}


async def allocate_story_ids(*, session: AsyncSession, n: int) -> list[int]:
    """`n` new story ids from the table's sequence, ascending (rows inserted later with them)."""
    rows = await session.execute(
        text("SELECT nextval(pg_get_serial_sequence('stories', 'id')) FROM generate_series(1, :n)"),
        {"n": n},
    )
    return sorted(rows.scalars())


async def insert_stories(
    *, session: AsyncSession, stories: Sequence[dict[str, Any]], ids: Sequence[int] | None = None
) -> list[int]:
    """Insert one batch; the new ids, in the order of `stories` (`ids`: allocated already).

    Rows with the same keys (an import batch) go through COPY: about 10x fewer round trips and
    less parsing than an executemany INSERT ... RETURNING."""
    if not stories:
        return []
    cols = list(stories[0])
    if ids is None and ("id" in cols or any(list(s) != cols for s in stories)):
        result = await session.execute(
            insert(Story).returning(Story.id, sort_by_parameter_order=True), list(stories)
        )
        return [row[0] for row in result]
    from psycopg.types.json import Jsonb

    if ids is None:
        ids = await allocate_story_ids(session=session, n=len(stories))
    json_at = [i + 1 for i, c in enumerate(cols) if c in _JSON_COLUMNS]
    raw = await driver_connection(session)
    async with (
        raw.cursor() as cur,
        cur.copy(f"COPY stories (id, {', '.join(cols)}) FROM STDIN") as copy,
    ):
        for story_id, story in zip(ids, stories, strict=True):
            values = [story_id, *(story[c] for c in cols)]
            for i in json_at:
                values[i] = Jsonb(values[i])
            await copy.write_row(values)
    return list(ids)


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
    *,
    session: AsyncSession,
    import_id: int,
    status: str,
    error: str | None = None,
    kept_sha256: str | None = None,
) -> None:
    await session.execute(
        text(
            "UPDATE imports SET status = :st, error = :e, kept_sha256 = :k, updated_at = now() "
            "WHERE id = :id"
        ),
        {"id": import_id, "st": status, "e": error, "k": kept_sha256},
    )


async def unfinished_imports(*, session: AsyncSession, path: str, fmt: str) -> list[dict[str, Any]]:
    """Failed or interrupted imports of this path and format (a shorter version of the file)."""
    rows = await session.execute(
        text(
            "SELECT id, size, head_sha256, next_offset, kept_sha256 FROM imports "
            "WHERE path = :p AND format = :f "
            "AND status <> 'completed' ORDER BY size DESC"
        ),
        {"p": path, "f": fmt},
    )
    return [dict(r._mapping) for r in rows]


async def adopt_import(
    *, session: AsyncSession, import_id: int, size: int, head_sha256: str
) -> None:
    """The file grew or was fixed past what this row kept: the row now names it, same position."""
    await session.execute(
        text(
            "UPDATE imports SET size = :s, head_sha256 = :h, updated_at = now() WHERE id = :id "
            "AND NOT EXISTS (SELECT 1 FROM imports o WHERE o.path = imports.path "
            "AND o.size = :s AND o.head_sha256 = :h)"
        ),
        {"id": import_id, "s": size, "h": head_sha256},
    )


# Bulk writes of the import and dedup stores: bigint data built by numpy, sent in PostgreSQL's
# binary formats, so a batch's ~84,000 band keys cost no Python loop (psycopg adapts a list
# element by element: ~50 ms per batch) and no array-literal parsing on the server.
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8  # signature, flags, extension length
_COPY_TRAILER = b"\xff\xff"
_INT8_PAIR = np.dtype([("n", ">i2"), ("l1", ">i4"), ("a", ">i8"), ("l2", ">i4"), ("b", ">i8")])
_INT8_ITEM = np.dtype([("len", ">i4"), ("value", ">i8")])
_INT8_OID, _INT8_ARRAY_OID = 20, 1016


class Int8Array:
    """A bigint[] query parameter, sent in binary (see :func:`register_int8_array`)."""

    __slots__ = ("values",)

    def __init__(self, values: Any) -> None:
        self.values = np.asarray(values, dtype=np.int64)


def _int8_array_dumper() -> type:
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class Int8ArrayDumper(Dumper):
        format = Format.BINARY
        oid = _INT8_ARRAY_OID

        def dump(self, obj: Int8Array) -> bytes:
            n = len(obj.values)
            if n == 0:
                return struct.pack(">3i", 0, 0, _INT8_OID)
            items = np.empty(n, dtype=_INT8_ITEM)
            items["len"], items["value"] = 8, obj.values
            return struct.pack(">5i", 1, 0, _INT8_OID, n, 1) + items.tobytes()

    return Int8ArrayDumper


def _int8_array_numpy_loader() -> type:
    from psycopg.adapt import Loader
    from psycopg.pq import Format

    class Int8ArrayNumpyLoader(Loader):
        format = Format.BINARY

        def load(self, data: Any) -> np.ndarray:
            ndim, _, _ = struct.unpack_from(">3i", data)
            if ndim == 0:
                return np.empty(0, dtype=np.int64)
            if ndim != 1:
                raise ValueError(f"expected a one-dimensional bigint[], got {ndim} dimensions")
            (n,) = struct.unpack_from(">i", data, 12)
            items = np.frombuffer(data, dtype=_INT8_ITEM, count=n, offset=20)
            if n and (items["len"] != 8).any():
                raise ValueError("a bigint[] with NULL elements cannot load as int64")
            return items["value"].astype(np.int64)

    return Int8ArrayNumpyLoader


def load_int8_arrays_as_numpy(cur: Any) -> None:
    """Make this binary cursor return bigint[] values as int64 numpy arrays (no Python ints)."""
    cur.adapters.register_loader(_INT8_ARRAY_OID, _int8_array_numpy_loader())


async def driver_connection(session: AsyncSession) -> Any:
    """The psycopg connection under this session, in its transaction (COPY, binary results)."""
    conn = await session.connection()
    return (await conn.get_raw_connection()).driver_connection


async def register_int8_array(session: AsyncSession) -> None:
    """Let this session's connection send :class:`Int8Array` parameters."""
    raw = await driver_connection(session)
    if not getattr(raw, "_int8_array_ready", False):
        raw.adapters.register_dumper(Int8Array, _int8_array_dumper())
        raw._int8_array_ready = True


async def copy_int8_pairs(session: AsyncSession, target: str, a: np.ndarray, b: np.ndarray) -> None:
    """COPY rows of two bigint columns (`target`: "table (col_a, col_b)") in binary."""
    rows = np.empty(len(a), dtype=_INT8_PAIR)
    rows["n"], rows["l1"], rows["l2"] = 2, 8, 8
    rows["a"], rows["b"] = a, b
    raw = await driver_connection(session)
    async with raw.cursor() as cur, cur.copy(f"COPY {target} FROM STDIN (FORMAT BINARY)") as copy:
        await copy.write(_COPY_HEADER + rows.tobytes() + _COPY_TRAILER)
