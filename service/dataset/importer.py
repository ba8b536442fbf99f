"""`tinystories import`: stream a TinyStories release file into the store, batch by batch.

Each batch (stories, their dedup status and the file position after it) is one transaction,
so a failure leaves only whole batches behind, the error says how many stories of the file were
kept, and a rerun resumes after the last batch. A file already imported completely is recognised
by (path, size, sha256 of its first MiB); a file that grew (a truncated shard replaced by the
complete one) resumes where its shorter version stopped, and so does a file fixed after the
bytes a failed import kept (their sha256 is stored when it fails). Stories longer than
`max_chars`, empty ones and those holding the release separator are skipped and counted with
their record numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.dataset.dedup import signatures
from service.dataset.import_formats import (
    SEPARATOR,
    Format,
    ImportedStory,
    ImportFormatError,
    detect_format,
    iter_stories,
)
from service.dataset.import_records import UnknownFields
from service.dataset.minhash import MinHashParams, normalized_hash, normalized_words, text_hash
from service.store import dedup as dedup_store
from service.store import imports as imports_store
from service.store.diversity_sketch import Sketch, StoryFacts
from service.store.signature_cache import SignatureCache

logger = logging.getLogger(__name__)
HEAD_BYTES = 1 << 20
# The longest of the 1,200 real TinyStories-train stories in tests/service/data is 4,107
# characters (837 words); four times that leaves room for long real stories and still refuses
# the megabyte "stories" of a file that is not what it claims to be.
DEFAULT_MAX_CHARS = 16_384
_EXAMPLES = 5  # record numbers kept per rejection reason


@dataclass
class ImportSummary:
    path: str
    format: str
    inserted: int = 0
    duplicates: int = 0
    already_done: bool = False
    resumed_at: int = 0
    rejected: dict[str, list[int]] = field(default_factory=dict)  # reason -> first record nos
    rejected_count: int = 0
    unknown_fields: str | None = None  # the one warning line, None when every field was read

    def reject(self, reason: str, record_no: int) -> None:
        self.rejected_count += 1
        examples = self.rejected.setdefault(reason, [])
        if len(examples) < _EXAMPLES:
            examples.append(record_no)


def file_identity(path: Path) -> tuple[int, str]:
    """Size and sha256 of the first MiB: cheap, and changes when the file is replaced."""
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
    return path.stat().st_size, hashlib.sha256(head).hexdigest()


def story_row(item: ImportedStory, source: str, normalized: str | None = None) -> dict[str, Any]:
    """A stories row for one imported record (`normalized`: its normalize_text, if known)."""
    words = [*(w or None for w in item.words), None, None, None]
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
        "instruction": item.instruction_text or None,
        "accepted": True,
        "text_hash": text_hash(item.text) if normalized is None else normalized_hash(normalized),
        "source": source,
    }


def holds_separator(item: ImportedStory) -> bool:
    """Whether a field the release text files carry holds ``<|endoftext|>``: written there, it
    would end the story early and make the rest of it a story of its own."""
    fields = (item.text, item.summary, item.instruction_text, *item.words, *item.features)
    return any(SEPARATOR in f for f in fields if f)


def _identify(path: str | os.PathLike[str], fmt: Format | None) -> tuple[Path, Format, int, str]:
    p = Path(path).resolve()
    fmt = fmt or detect_format(p)
    size, head = file_identity(p)
    return p, fmt, size, head


def _prefix_sha(path: Path, n: int) -> str:
    with path.open("rb") as f:
        return hashlib.sha256(f.read(min(n, HEAD_BYTES))).hexdigest()


def _kept_sha(path: Path, n: int) -> str:
    """sha256 of the first `n` bytes (what a failed import kept), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while n > 0 and (block := f.read(min(n, HEAD_BYTES))):
            digest.update(block)
            n -= len(block)
    return digest.hexdigest()


def _continues(p: Path, size: int, head: str, row: dict[str, Any]) -> bool:
    """Whether this file is row's file grown, or fixed after the bytes row's import kept."""
    if (row["size"], row["head_sha256"]) == (size, head):
        return False  # the same file: open_import finds its row
    if row["size"] < size and _prefix_sha(p, row["size"]) == row["head_sha256"]:
        return True
    kept, offset = row["kept_sha256"], row["next_offset"]
    return bool(kept) and 0 < offset <= size and _kept_sha(p, offset) == kept


async def _open(
    sessionmaker: async_sessionmaker[AsyncSession], p: Path, size: int, head: str, fmt: str
) -> dict[str, Any]:
    """The import row of this file; a grown or fixed file takes over the row of its earlier
    version."""
    async with sessionmaker() as session, session.begin():
        earlier = await imports_store.unfinished_imports(session=session, path=str(p), fmt=fmt)
        for row in earlier:
            if _continues(p, size, head, row):
                await imports_store.adopt_import(
                    session=session, import_id=row["id"], size=size, head_sha256=head
                )
                break
        return await imports_store.open_import(
            session=session, path=str(p), size=size, head_sha256=head, fmt=fmt
        )


async def import_file(
    sessionmaker: async_sessionmaker[AsyncSession],
    path: str | os.PathLike[str],
    *,
    fmt: Format | None = None,
    batch_size: int = 2_000,
    max_chars: int = DEFAULT_MAX_CHARS,
    params: MinHashParams | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    cache: SignatureCache | None = None,
) -> ImportSummary:
    """Import `path`; ImportFormatError on bad data, saying what of the file was kept.

    `cache`: root signatures kept across files (one import of many shards); a new one by
    default, kept across this file's batches."""
    params = params or MinHashParams()
    p, fmt, size, head = _identify(path, fmt)
    source = f"import:{p.name}"[:64]
    state = await _open(sessionmaker, p, size, head, fmt)
    out = ImportSummary(path=str(p), format=fmt, resumed_at=state["next_record"])
    if state["status"] == "completed":
        out.already_done = True
        return out
    stream = iter_stories(
        p, fmt, start_record=state["next_record"], start_offset=state["next_offset"]
    )
    position = (state["next_record"], state["next_offset"])
    unknown = UnknownFields()
    if cache is None:
        cache = SignatureCache(params.num_perm)
    elif cache.num_perm != params.num_perm:
        raise ValueError(f"cache holds {cache.num_perm} slots, params {params.num_perm}")

    def batches() -> Iterator[_Prepared]:
        batch: list[ImportedStory] = []
        for item in stream:
            unknown.add(item)
            if not item.text:
                out.reject("empty story", item.line_or_record_no)
                continue
            if len(item.text) > max_chars:
                out.reject(f"longer than {max_chars} characters", item.line_or_record_no)
                continue
            if holds_separator(item):
                out.reject(f"holding the {SEPARATOR} separator", item.line_or_record_no)
                continue
            batch.append(item)
            if len(batch) >= batch_size:
                yield _prepare(batch, source, params)
                batch = []
        if batch:
            yield _prepare(batch, source, params)

    try:
        async for prepared in _ahead(batches()):
            await _store_batch(sessionmaker, state["id"], prepared, params, out, cache)
            position = prepared.position
            if on_progress:
                on_progress(position[1], size)
    except Exception as exc:
        kept = await asyncio.to_thread(_kept_sha, p, position[1]) if position[1] else None
        async with sessionmaker() as session, session.begin():
            await imports_store.end_import(
                session=session,
                import_id=state["id"],
                status="failed",
                error=str(exc)[:2000],
                kept_sha256=kept,
            )
        logger.warning("import failed path=%s at_record=%d error=%s", p, position[0], exc)
        if isinstance(exc, ImportFormatError):
            raise ImportFormatError(
                exc.path,
                f"{exc.reason}; {_kept(out, state, position)}",
                record_no=exc.record_no,
                byte_offset=exc.byte_offset,
            ) from None
        raise
    async with sessionmaker() as session, session.begin():
        await imports_store.end_import(session=session, import_id=state["id"], status="completed")
    out.unknown_fields = unknown.line()
    if on_progress:
        on_progress(size, size)
    logger.info(
        "import done path=%s format=%s inserted=%d duplicates=%d rejected=%d",
        p,
        fmt,
        out.inserted,
        out.duplicates,
        out.rejected_count,
    )
    return out


def _kept(out: ImportSummary, state: dict[str, Any], position: tuple[int, int]) -> str:
    """What an interrupted import left in the store, and how to go on."""
    before = state["inserted"]
    kept = before + out.inserted
    if kept == 0:
        return "nothing of this file was stored"
    return (
        f"kept {kept} stories of this file (records 0-{position[0] - 1}, "
        f"{out.inserted} in this run); fix the file and rerun the same command to resume "
        f"at record {position[0]}"
    )


@dataclass
class _Prepared:
    """A batch ready to store: its rows, signatures and diversity sketch (nearest neighbours
    left out), and the file position after it."""

    rows: list[dict[str, Any]]
    sigs: Any
    sketch: Sketch
    position: tuple[int, int]


def _prepare(batch: list[ImportedStory], source: str, params: MinHashParams) -> _Prepared:
    # Each story is normalised once, for its hash, its signature and its sketch.
    words = [normalized_words(item.text.replace("\x00", "")) for item in batch]
    normalized = [" ".join(w) for w in words]
    rows = [story_row(item, source, norm) for item, norm in zip(batch, normalized, strict=True)]
    facts = [
        StoryFacts(r["text"], r["verb"], r["noun"], r["adjective"], r["features"]) for r in rows
    ]
    last = batch[-1]
    return _Prepared(
        rows=rows,
        sigs=signatures(normalized, params, normalized=True),
        sketch=Sketch().add_stories(facts, words),
        position=(last.line_or_record_no + 1, last.end_offset or 0),
    )


async def _ahead(batches: Iterator[_Prepared], depth: int = 2) -> AsyncIterator[_Prepared]:
    """Read, parse and hash the next batches in a thread while Postgres stores this one (the
    two halves of the work then use both cores); an error arrives after the batches before it."""
    done = object()
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for prepared in batches:
                while not stop.is_set():
                    try:
                        q.put(prepared, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer, in order
            q.put(exc)

    worker = threading.Thread(target=produce, name="import-reader", daemon=True)
    worker.start()
    try:
        while (item := await asyncio.to_thread(q.get)) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                q.get_nowait()
            await asyncio.to_thread(worker.join, 0.1)


async def _store_batch(
    sessionmaker: async_sessionmaker[AsyncSession],
    import_id: int,
    prepared: _Prepared,
    params: MinHashParams,
    summary: ImportSummary,
    cache: SignatureCache,
) -> None:
    """One transaction: the batch's stories, with their dedup status, and the file position."""
    rows, sigs, position = prepared.rows, prepared.sigs, prepared.position
    async with sessionmaker() as session, session.begin():
        ids = await imports_store.allocate_story_ids(session=session, n=len(rows))
        items = [
            dedup_store.DedupItem(sid, row["text_hash"], sig)
            for sid, row, sig in zip(ids, rows, sigs, strict=True)
        ]

        async def store(outcomes: dict[int, dedup_store.DedupOutcome]) -> None:
            for sid, row in zip(ids, rows, strict=True):
                row["dedup_status"] = outcomes[sid].status
                row["dedup_cluster_id"] = outcomes[sid].cluster_id
                row["nn_jaccard"] = outcomes[sid].nn_jaccard
            await imports_store.insert_stories(session=session, stories=rows, ids=ids)

        outcomes = await dedup_store.index_stories(
            session=session,
            items=items,
            params=params,
            store_new=store,
            sketch=prepared.sketch,
            cache=cache,
        )
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
