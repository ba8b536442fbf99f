"""Streaming readers for the TinyStories release formats (bounded memory, resumable).

Formats: ``text`` (``<|endoftext|>``-separated stories, TinyStories-train.txt), ``instruct``
(TinyStories-Instruct records), ``json`` (a ``TinyStories_all_data/dataNN.json`` shard: one
top-level list of records) and ``jsonl`` (one such record per line). Every reader yields
:class:`ImportedStory` with ``line_or_record_no`` (0-based record index in the file) and, for the
byte-seekable formats, ``end_offset`` so an interrupted import resumes with
``iter_stories(path, start_record=n + 1, start_offset=end_offset)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from generator.instruct import parse_instruct_record

Format = Literal["text", "instruct", "json", "jsonl"]
FORMATS: tuple[str, ...] = ("text", "instruct", "json", "jsonl")
SEPARATOR = "<|endoftext|>"
_SEP = SEPARATOR.encode("ascii")
CHUNK_BYTES = 1 << 20
MAX_RECORD_BYTES = 16 << 20  # a "story" this long means the file is not what it claims to be
_SNIFF_BYTES = 64 << 10
HEADER_FIELDS = {
    "Summary": "summary",
    "Words": "words",
    "Features": "features",
    "Random sentence": "random_sentence",
}


class ImportFormatError(ValueError):
    """An import file that cannot be read as any supported format, or is damaged."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        reason: str,
        *,
        record_no: int | None = None,
        byte_offset: int | None = None,
    ) -> None:
        self.path = str(path)
        self.reason = reason
        self.record_no = record_no
        self.byte_offset = byte_offset
        where = []
        if record_no is not None:
            where.append(f"record {record_no}")
        if byte_offset is not None:
            where.append(f"byte {byte_offset}")
        loc = f" ({', '.join(where)})" if where else ""
        super().__init__(f"{self.path}{loc}: {reason}")


@dataclass(frozen=True)
class ImportedStory:
    """One story read from an import file, with its position in that file."""

    text: str
    summary: str | None = None
    words: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    prompt: str | None = None
    source: str | None = None
    instruction_text: str | None = None  # Instruct header lines, each ending in "\n"
    line_or_record_no: int = 0
    random_sentence: str | None = None
    end_offset: int | None = None  # byte offset just past the record (text/instruct/jsonl)


def detect_format(path: str | os.PathLike[str]) -> Format:
    """Guess the format from the file name and its first bytes; ImportFormatError if unsure."""
    p = Path(path)
    if not p.is_file():
        raise ImportFormatError(p, "no such file")
    with p.open("rb") as f:
        head = f.read(_SNIFF_BYTES)
    if not head.strip():
        raise ImportFormatError(p, "file is empty")
    if b"\x00" in head:
        raise ImportFormatError(p, "binary file (NUL bytes); expected text, JSON or JSONL")
    first = head.lstrip()[:1]
    name = p.name.lower()
    if name.endswith(".jsonl") or (first == b"{" and not name.endswith(".json")):
        if first != b"{":
            raise ImportFormatError(p, "a .jsonl file must hold one JSON object per line")
        return "jsonl"
    if first == b"[":
        return "json"
    if name.endswith(".json"):
        raise ImportFormatError(p, "a TinyStories_all_data shard must be a JSON list of records")
    try:
        text = head.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # a cut multi-byte char at the window end is fine
            raise ImportFormatError(p, "not UTF-8 text", byte_offset=exc.start) from None
        text = head[: exc.start].decode("utf-8")
    first_record = text.split(SEPARATOR, 1)[0]
    if _looks_instruct(first_record):
        return "instruct"
    if SEPARATOR in text or len(head) < _SNIFF_BYTES:
        return "text"
    raise ImportFormatError(
        p, f"unknown format: no {SEPARATOR} separator in the first 64 KiB and not JSON"
    )


def _looks_instruct(record: str) -> bool:
    lines = [ln.strip() for ln in record.strip().splitlines()]
    has_story = any(ln.startswith("Story:") for ln in lines)
    has_header = any(ln.startswith(f"{h}:") for ln in lines for h in HEADER_FIELDS)
    return has_story and has_header


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
    if fmt == "text":
        yield from iter_text(
            path, start_record=start_record, start_offset=start_offset, chunk_bytes=chunk_bytes
        )
    elif fmt == "instruct":
        yield from iter_instruct(
            path, start_record=start_record, start_offset=start_offset, chunk_bytes=chunk_bytes
        )
    elif fmt == "json":
        yield from iter_json_shard(path, start_record=start_record, chunk_bytes=chunk_bytes)
    elif fmt == "jsonl":
        yield from iter_jsonl(path, start_record=start_record, start_offset=start_offset)
    else:
        raise ImportFormatError(path, f"unknown format {fmt!r}; expected one of {FORMATS}")


def _iter_separated(
    path: str | os.PathLike[str], start_record: int, start_offset: int, chunk_bytes: int
) -> Iterator[tuple[int, str, int]]:
    """(record_no, record text, end offset) for each non-empty <|endoftext|>-separated record."""
    record_no = start_record
    buf = b""
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
        try:
            rec = parse_instruct_record(text)
        except ValueError as exc:
            raise ImportFormatError(
                path, f"bad TinyStories-Instruct record: {exc}", record_no=no
            ) from None
        yield ImportedStory(
            text=rec["story"],
            summary=rec["summary"],
            words=tuple(rec["words"]),
            features=tuple(rec["features"]),
            instruction_text=rec["instruction"],
            random_sentence=rec["random_sentence"],
            line_or_record_no=no,
            end_offset=end,
        )


def story_from_record(
    path: str | os.PathLike[str], rec: Any, record_no: int, end_offset: int | None = None
) -> ImportedStory:
    """An ImportedStory from a TinyStories_all_data record (JSON shard or JSONL line)."""
    if not isinstance(rec, dict):
        raise ImportFormatError(path, "record is not a JSON object", record_no=record_no)
    text = rec.get("story", rec.get("text"))
    if not isinstance(text, str):
        raise ImportFormatError(path, "record has no 'story' string", record_no=record_no)
    instr = rec.get("instruction") or {}
    if not isinstance(instr, dict):
        raise ImportFormatError(path, "'instruction' is not an object", record_no=record_no)
    # The release spells the key "prompt:" (with the colon); accept both.
    prompt = instr.get("prompt:", instr.get("prompt"))
    words = instr.get("words") or ()
    features = instr.get("features") or ()
    if not isinstance(words, list | tuple) or not isinstance(features, list | tuple):
        raise ImportFormatError(path, "'words' and 'features' must be lists", record_no=record_no)
    summary = rec.get("summary")
    source = rec.get("source")
    return ImportedStory(
        text=text.strip(),
        summary=summary if isinstance(summary, str) else None,
        words=tuple(str(w) for w in words),
        features=tuple(str(x) for x in features),
        prompt=prompt if isinstance(prompt, str) else None,
        source=source if isinstance(source, str) else None,
        line_or_record_no=record_no,
        end_offset=end_offset,
    )


class _CountingReader:
    """Binary file wrapper that remembers how many bytes the parser has consumed."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.consumed = 0

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
        reader = _CountingReader(raw)
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
            if f.read(_SNIFF_BYTES).lstrip()[:1] != b"[":
                raise ImportFormatError(path, "expected a top-level JSON list of records")


def iter_jsonl(
    path: str | os.PathLike[str], *, start_record: int = 0, start_offset: int = 0
) -> Iterator[ImportedStory]:
    """One record per line; blank lines are skipped, record numbers count records."""
    record_no = start_record
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
