"""Streaming readers for the TinyStories release formats (bounded memory, resumable).

Formats: ``text`` (``<|endoftext|>``-separated stories, TinyStories-train.txt), ``instruct``
(TinyStories-Instruct records), ``json`` (a ``TinyStories_all_data/dataNN.json`` shard: one
top-level list of records), ``jsonl`` (one such record per line) and ``parquet`` (our export's
shards, or any table with a story column); records are mapped by
:mod:`service.dataset.import_records`. Every reader yields
:class:`ImportedStory` with ``line_or_record_no`` (0-based record index in the file) and, for the
byte-seekable formats, ``end_offset`` so an interrupted import resumes with
``iter_stories(path, start_record=n + 1, start_offset=end_offset)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Literal

from service.dataset.import_records import (
    ImportedStory,
    ImportFormatError,
    story_from_instruct,
    story_from_record,
)

__all__ = [
    "FORMATS",
    "SEPARATOR",
    "ImportFormatError",
    "ImportedStory",
    "detect_format",
    "iter_stories",
]

Format = Literal["text", "instruct", "json", "jsonl", "parquet"]
FORMATS: tuple[str, ...] = ("text", "instruct", "json", "jsonl", "parquet")
SEPARATOR = "<|endoftext|>"
_SEP = SEPARATOR.encode("ascii")
# A UTF-8 byte-order mark (Windows editors write one) is skipped at byte 0 only, as the
# utf-8-sig codec does; offsets stay file offsets, so a resumed import seeks where it stopped.
BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 1 << 20
MAX_RECORD_BYTES = 16 << 20  # a "story" this long means the file is not what it claims to be
_SNIFF_BYTES = 64 << 10
HEADER_FIELDS = {
    "Summary": "summary",
    "Words": "words",
    "Features": "features",
    "Random sentence": "random_sentence",
}
# Extensions of the files import reads; anything else needs an explicit --format.
EXTENSIONS = {".txt": None, ".json": "json", ".jsonl": "jsonl", ".parquet": "parquet"}
_MAGIC = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
    b"PK\x03\x04": "zip",
    b"7z\xbc\xaf\x27\x1c": "7z",
}
_PARQUET_MAGIC = b"PAR1"


def detect_format(path: str | os.PathLike[str]) -> Format:
    """Guess the format from the file name and its first bytes; ImportFormatError if unsure."""
    p = Path(path)
    head = _head(p)
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    refuse_unreadable(p, head=head)
    name = p.name.lower()
    ext = Path(name).suffix
    if ext not in EXTENSIONS:
        raise ImportFormatError(
            p,
            f"unknown file type {ext or '(no extension)'!r}: import reads "
            f"{', '.join(EXTENSIONS)} files (or name the format with --format)",
        )
    if ext == ".parquet":
        raise ImportFormatError(p, "not a parquet file (no PAR1 magic bytes)")
    first = head.removeprefix(BOM).lstrip()[:1]
    if ext == ".jsonl":
        if first != b"{":
            raise ImportFormatError(p, "a .jsonl file must hold one JSON object per line")
        return "jsonl"
    if ext == ".json":
        if first == b"[":
            return "json"
        raise ImportFormatError(
            p,
            "a .json file must be a JSON list of records (a TinyStories_all_data shard); "
            "for one JSON object per line use --format jsonl",
        )
    text = _sniff_text(p, head)
    return sniff_text_format(p, text, complete=len(head) < _SNIFF_BYTES)


def _head(p: Path) -> bytes:
    if not p.is_file():
        raise ImportFormatError(p, "no such file")
    with p.open("rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head.removeprefix(BOM).strip():
        raise ImportFormatError(p, "file is empty")
    return head


def _bom_len(path: str | os.PathLike[str]) -> int:
    """Bytes of a byte-order mark at the start of the file (0 or 3)."""
    with open(path, "rb") as f:
        return len(BOM) if f.read(len(BOM)) == BOM else 0


def refuse_unreadable(
    path: str | os.PathLike[str], fmt: str | None = None, *, head: bytes | None = None
) -> None:
    """ImportFormatError for a compressed or binary file (also when --format names one)."""
    p = Path(path)
    head = _head(p) if head is None else head
    if fmt == "parquet":
        if not head.startswith(_PARQUET_MAGIC):
            raise ImportFormatError(p, "not a parquet file (no PAR1 magic bytes)")
        return
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            raise ImportFormatError(
                p, f"{kind}-compressed file: decompress it first, then import the result"
            )
    if b"\x00" in head:
        raise ImportFormatError(
            p,
            "binary file (NUL bytes); expected text, JSON, JSONL or parquet",
            byte_offset=head.index(b"\x00"),
        )


def _sniff_text(p: Path, head: bytes) -> str:
    skip = len(BOM) if head.startswith(BOM) else 0
    body = head[skip:]
    try:
        return body.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        if exc.start < len(body) - 4:  # a cut multi-byte char at the window end is fine
            record_no = sum(1 for r in body[: exc.start].split(_SEP)[:-1] if r.strip())
            raise ImportFormatError(
                p, "not UTF-8 text", record_no=record_no, byte_offset=skip + exc.start
            ) from None
        return body[: exc.start].decode("utf-8")


def sniff_text_format(p: Path, text: str, *, complete: bool) -> Format:
    """text or instruct from the first records of a .txt file; refuses what is not stories."""
    if text.lstrip()[:1] in ("[", "{"):
        raise ImportFormatError(p, "JSON content in a .txt file: rename it .json or .jsonl")
    records = [r for r in text.split(SEPARATOR) if r.strip()]
    if not complete and SEPARATOR in text:
        records = records[:-1] or records  # the last one may be cut by the sniff window
    if not records:
        raise ImportFormatError(p, f"no stories: only {SEPARATOR} separators")
    if SEPARATOR not in text and not complete:
        raise ImportFormatError(
            p, f"unknown format: no {SEPARATOR} separator in the first 64 KiB and not JSON"
        )
    instruct = [_looks_instruct(r) for r in records]
    if all(instruct):
        return "instruct"
    if any(instruct):
        raise ImportFormatError(
            p,
            "mixed records: some are TinyStories-Instruct records, others plain stories; "
            "pass --format instruct or --format text",
            record_no=instruct.index(False),
        )
    if not any(_looks_like_prose(r) for r in records):
        raise ImportFormatError(
            p,
            "not stories: no record has sentences (a word list or table?); "
            "import reads TinyStories release files",
            record_no=0,
        )
    return "text"


def _looks_instruct(record: str) -> bool:
    """Header lines (possibly none) then a line starting with "Story:"."""
    for line in record.strip().splitlines():
        if line.startswith("Story:"):
            return True
        label, sep, _ = line.partition(":")
        if not sep or label not in HEADER_FIELDS:
            return False
    return False


def _looks_like_prose(record: str) -> bool:
    """At least a sentence: eight words or more, and a sentence end, on lines of several words."""
    words = record.split()
    lines = [ln for ln in record.splitlines() if ln.strip()]
    has_end = any(c in record for c in ".!?")
    return len(words) >= 8 and has_end and len(words) >= 3 * len(lines)


def iter_stories(
    path: str | os.PathLike[str],
    fmt: Format | None = None,
    *,
    start_record: int = 0,
    start_offset: int = 0,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[ImportedStory]:
    """Stream stories from `path` (format detected when `fmt` is None)."""
    fmt = fmt or detect_format(path)
    if fmt in ("text", "instruct"):
        read = iter_text if fmt == "text" else iter_instruct
        yield from read(
            path, start_record=start_record, start_offset=start_offset, chunk_bytes=chunk_bytes
        )
    elif fmt == "json":
        yield from iter_json_shard(path, start_record=start_record, chunk_bytes=chunk_bytes)
    elif fmt == "jsonl":
        yield from iter_jsonl(path, start_record=start_record, start_offset=start_offset)
    elif fmt == "parquet":
        yield from iter_parquet(path, start_record=start_record)
    else:
        raise ImportFormatError(path, f"unknown format {fmt!r}; expected one of {FORMATS}")


def _iter_separated(
    path: str | os.PathLike[str], start_record: int, start_offset: int, chunk_bytes: int
) -> Iterator[tuple[int, str, int]]:
    """(record_no, record text, end offset) for each non-empty <|endoftext|>-separated record."""
    record_no = start_record
    buf = b""
    start_offset = start_offset or _bom_len(path)
    buf_start = start_offset  # file offset of buf[0]
    with open(path, "rb") as f:
        f.seek(start_offset)
        while True:
            chunk = f.read(chunk_bytes)
            buf += chunk
            pos = 0
            while (i := buf.find(_SEP, pos)) >= 0:
                raw = buf[pos:i]
                end = buf_start + i + len(_SEP)
                if raw.strip():
                    yield record_no, _decode(path, raw, record_no, buf_start + pos), end
                    record_no += 1
                pos = i + len(_SEP)
            buf = buf[pos:]
            buf_start += pos
            if not chunk:
                break
            if len(buf) > MAX_RECORD_BYTES:
                raise ImportFormatError(
                    path,
                    f"record longer than {MAX_RECORD_BYTES >> 20} MiB without a "
                    f"{SEPARATOR} separator",
                    record_no=record_no,
                    byte_offset=buf_start,
                )
    if buf.strip():  # last story without a trailing separator
        yield record_no, _decode(path, buf, record_no, buf_start), buf_start + len(buf)


def _decode(path: str | os.PathLike[str], raw: bytes, record_no: int, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ImportFormatError(
            path, "not UTF-8 text", record_no=record_no, byte_offset=offset + exc.start
        ) from None


def iter_text(
    path: str | os.PathLike[str],
    *,
    start_record: int = 0,
    start_offset: int = 0,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[ImportedStory]:
    """Stories of a ``<|endoftext|>``-separated file (TinyStories-train.txt, V2, valid)."""
    for no, text, end in _iter_separated(path, start_record, start_offset, chunk_bytes):
        yield ImportedStory(text=text.strip(), line_or_record_no=no, end_offset=end)


def iter_instruct(
    path: str | os.PathLike[str],
    *,
    start_record: int = 0,
    start_offset: int = 0,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[ImportedStory]:
    """Records of a TinyStories-Instruct file (Summary/Words/Features/Random sentence, Story)."""
    for no, text, end in _iter_separated(path, start_record, start_offset, chunk_bytes):
        yield story_from_instruct(path, text, no, end)


class _CountingReader:
    """Binary file wrapper that remembers how many bytes the parser has consumed."""

    def __init__(self, f: BinaryIO, consumed: int = 0) -> None:
        self._f = f
        self.consumed = consumed

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.consumed += len(data)
        return data


def iter_json_shard(
    path: str | os.PathLike[str], *, start_record: int = 0, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[ImportedStory]:
    """Records of a TinyStories_all_data shard, parsed incrementally with ijson."""
    import ijson

    record_no = 0
    with open(path, "rb") as raw:
        raw.seek(skip := _bom_len(path))  # ijson refuses a byte-order mark
        reader = _CountingReader(raw, skip)
        items = ijson.items(reader, "item", buf_size=min(chunk_bytes, 1 << 16))
        try:
            for rec in items:
                if record_no >= start_record:
                    yield story_from_record(path, rec, record_no)
                record_no += 1
        except ijson.common.JSONError as exc:
            detail = (str(exc).strip().splitlines() or ["parse error"])[0][:120]
            cut = isinstance(exc, ijson.common.IncompleteJSONError) and (
                "premature eof" in detail.lower() or "incomplete" in detail.lower()
            )
            reason = "truncated JSON (file ends mid-record)" if cut else f"invalid JSON: {detail}"
            raise ImportFormatError(
                path,
                f"{reason}; {record_no} complete records before it",
                record_no=record_no,
                byte_offset=reader.consumed,
            ) from None
    if record_no == 0:
        # ijson yields nothing for a top-level object: say so instead of importing nothing.
        with open(path, "rb") as f:
            if f.read(_SNIFF_BYTES).removeprefix(BOM).lstrip()[:1] != b"[":
                raise ImportFormatError(path, "expected a top-level JSON list of records")


def iter_jsonl(
    path: str | os.PathLike[str], *, start_record: int = 0, start_offset: int = 0
) -> Iterator[ImportedStory]:
    """One record per line; blank lines are skipped, record numbers count records."""
    record_no = start_record
    start_offset = start_offset or _bom_len(path)
    with open(path, "rb") as f:
        f.seek(start_offset)
        offset = start_offset
        for line in f:
            line_start = offset
            offset += len(line)
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise ImportFormatError(
                    path,
                    f"invalid JSON line: {exc}",
                    record_no=record_no,
                    byte_offset=line_start,
                ) from None
            yield story_from_record(path, rec, record_no, end_offset=offset)
            record_no += 1


def iter_parquet(path: str | os.PathLike[str], *, start_record: int = 0) -> Iterator[ImportedStory]:
    """Rows of a parquet file (our export's shards, or any table with a story/text column)."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise ImportFormatError(path, f"unreadable parquet file: {exc}") from None
    names = set(pf.schema_arrow.names)
    if not names & {"story", "text"}:
        raise ImportFormatError(path, "parquet file has no 'story' or 'text' column")
    record_no = 0
    try:
        for batch in pf.iter_batches(batch_size=2_000):
            for rec in batch.to_pylist():
                if record_no >= start_record:
                    yield story_from_record(path, rec, record_no)
                record_no += 1
    except OSError as exc:
        raise ImportFormatError(path, f"damaged parquet file: {exc}", record_no=record_no) from None
