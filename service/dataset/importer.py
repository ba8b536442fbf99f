"""`tinystories import`: stream a TinyStories release file into the store, batch by batch.

Each batch (stories, their dedup status and the file position after it) is one transaction,
so a failure leaves only whole batches behind and a rerun resumes after the last one; a file
already imported completely is recognised by (path, size, sha256 of its first MiB).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.dataset.dedup import signatures
from service.dataset.import_formats import Format, ImportedStory, detect_format, iter_stories
from service.dataset.minhash import MinHashParams, text_hash
from service.store import dedup as dedup_store
from service.store import imports as imports_store

logger = logging.getLogger(__name__)
HEAD_BYTES = 1 << 20


@dataclass
class ImportSummary:
    path: str
    format: str
    inserted: int = 0
    duplicates: int = 0
    already_done: bool = False
    resumed_at: int = 0


def file_identity(path: Path) -> tuple[int, str]:
    """Size and sha256 of the first MiB: cheap, and changes when the file is replaced."""
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
    return path.stat().st_size, hashlib.sha256(head).hexdigest()


def story_row(item: ImportedStory, source: str) -> dict[str, Any]:
    """A stories row for one imported record."""
    words = [*item.words, None, None, None]
    return {
        "text": item.text.replace("\x00", ""),
        "verb": words[0],
        "noun": words[1],
        "adjective": words[2],
        "features": list(item.features),
        "prompt": item.prompt,
        "model": item.source,
        "provider": "import",
        "summary": item.summary,
        "instruction": item.instruction_text,
        "accepted": True,
        "text_hash": text_hash(item.text),
        "source": source,
    }


def _identify(path: str | os.PathLike[str], fmt: Format | None) -> tuple[Path, Format, int, str]:
    p = Path(path).resolve()
    fmt = fmt or detect_format(p)
    size, head = file_identity(p)
    return p, fmt, size, head


async def import_file(
    sessionmaker: async_sessionmaker[AsyncSession],
    path: str | os.PathLike[str],
    *,
    fmt: Format | None = None,
    batch_size: int = 2_000,
    params: MinHashParams | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    """Import `path`; ImportFormatError (nothing of the failed batch stored) on bad data."""
    params = params or MinHashParams()
    p, fmt, size, head = _identify(path, fmt)
    source = f"import:{p.name}"[:64]
    async with sessionmaker() as session, session.begin():
        state = await imports_store.open_import(
            session=session, path=str(p), size=size, head_sha256=head, fmt=fmt
        )
    out = ImportSummary(path=str(p), format=fmt, resumed_at=state["next_record"])
    if state["status"] == "completed":
        out.already_done = True
        return out
    stream = iter_stories(
        p, fmt, start_record=state["next_record"], start_offset=state["next_offset"]
    )
    position = (state["next_record"], state["next_offset"])
    try:
        batch: list[ImportedStory] = []
        for item in stream:
            batch.append(item)
            if len(batch) >= batch_size:
                position = await _store_batch(sessionmaker, state["id"], batch, source, params, out)
                batch = []
                if on_progress:
                    on_progress(position[1], size)
        if batch:
            position = await _store_batch(sessionmaker, state["id"], batch, source, params, out)
    except Exception as exc:
        async with sessionmaker() as session, session.begin():
            await imports_store.end_import(
                session=session, import_id=state["id"], status="failed", error=str(exc)[:2000]
            )
        logger.warning("import failed path=%s at_record=%d error=%s", p, position[0], exc)
        raise
    async with sessionmaker() as session, session.begin():
        await imports_store.end_import(session=session, import_id=state["id"], status="completed")
    if on_progress:
        on_progress(size, size)
    logger.info(
        "import done path=%s format=%s inserted=%d duplicates=%d",
        p,
        fmt,
        out.inserted,
        out.duplicates,
    )
    return out


async def _store_batch(
    sessionmaker: async_sessionmaker[AsyncSession],
    import_id: int,
    batch: list[ImportedStory],
    source: str,
    params: MinHashParams,
    summary: ImportSummary,
) -> tuple[int, int]:
    rows = [story_row(item, source) for item in batch]
    sigs = signatures([r["text"] for r in rows], params)  # outside the transaction
    last = batch[-1]
    position = (last.line_or_record_no + 1, last.end_offset or 0)
    async with sessionmaker() as session, session.begin():
        ids = await imports_store.insert_stories(session=session, stories=rows)
        items = [
            dedup_store.DedupItem(sid, row["text_hash"], sig)
            for sid, row, sig in zip(ids, rows, sigs, strict=True)
        ]
        outcomes = await dedup_store.index_stories(session=session, items=items, params=params)
        dups = sum(o.status != "unique" for o in outcomes.values())
        await imports_store.advance_import(
            session=session,
            import_id=import_id,
            next_record=position[0],
            next_offset=position[1],
            inserted=len(ids),
            duplicates=dups,
        )
    summary.inserted += len(ids)
    summary.duplicates += dups
    return position
