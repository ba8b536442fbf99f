"""One imported record -> :class:`ImportedStory`: the release layouts and the common variants.

Understood JSON layouts (JSON shard, JSONL line, parquet row):

- the ``TinyStories_all_data`` record: ``story``, ``instruction`` {``prompt:``, ``words``,
  ``features``}, ``summary``, ``source`` (the model);
- recipe and features at the top level (a common re-publication layout): ``recipe``
  {``verb``, ``noun``, ``adjective``} or ``words`` / ``verb`` / ``noun`` / ``adjective``,
  ``features``, ``prompt``, ``model``;
- what our own export writes besides: ``instruct_header`` (the TinyStories-Instruct header lines)
  and the parquet columns.

Every other key is counted by name (:data:`UNKNOWN_KEY`), so the importer can report the fields it
ignored in one warning line instead of dropping them silently.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from generator.instruct import HEADER_KEYS, compose_instruct_record, parse_instruct_record

STORY_MARKER = "Story: \n\n"
# Keys read from a record (top level), by role.
_TEXT_KEYS = ("story", "text")
_KNOWN_TOP = {
    *_TEXT_KEYS,
    "instruction",
    "summary",
    "source",
    "model",
    "recipe",
    "words",
    "verb",
    "noun",
    "adjective",
    "features",
    "prompt",
    "instruct_header",
    "random_sentence",
    # parquet / DatasetDict columns of our own export (derived or provenance only)
    "id",
    "instruct_text",
    "provider",
    "cost_usd",
    "dedup_cluster",
    "story_hash",
    "_meta",  # annotations of the test samples
}
_KNOWN_INSTRUCTION = {"prompt:", "prompt", "words", "features"}
_KNOWN_RECIPE = {"verb", "noun", "adjective", "words"}
# The source of a story in our own export is the model; anything that names a file is provenance.
_PROVENANCE_PREFIXES = ("import:", "generated")


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
    unknown_keys: tuple[str, ...] = ()  # fields of the record nothing reads


def word_slots(words: Iterable[Any]) -> list[str]:
    """Recipe words in role order (verb, noun, adjective), read back by position: a missing word
    before a present one stays an empty slot (`Words: , dog, happy` has no verb), so a partial
    recipe keeps its roles; missing words at the end are dropped, as the release writes them."""
    slots = ["" if w is None else str(w).strip() for w in words]
    while slots and not slots[-1]:
        slots.pop()
    return slots


def header_words(header: str) -> tuple[str, ...]:
    """The Words line of an Instruct header, by position (see :func:`word_slots`)."""
    for line in header.splitlines():
        label, sep, value = line.partition(": ")
        if sep and label == HEADER_KEYS["words"]:
            return tuple(word_slots(value.split(",")))
    return ()


def story_from_instruct(
    path: str | os.PathLike[str], text: str, record_no: int, end_offset: int
) -> ImportedStory:
    """An ImportedStory from one TinyStories-Instruct record."""
    try:
        rec = parse_instruct_record(text)
    except ValueError as exc:
        raise ImportFormatError(
            path, f"bad TinyStories-Instruct record: {exc}", record_no=record_no
        ) from None
    return ImportedStory(
        text=rec["story"],
        summary=rec["summary"],
        words=header_words(rec["instruction"]),
        features=tuple(rec["features"]),
        instruction_text=rec["instruction"],
        random_sentence=rec["random_sentence"],
        line_or_record_no=record_no,
        end_offset=end_offset,
    )


def instruct_header_of(
    *,
    instruction: str | None,
    summary: str | None,
    words: list[str | None],
    features: list[str],
) -> str:
    """The Instruct header of a story: its stored header, else one made from its fields
    (Summary, Words, Features, in that order; empty when it has none of them)."""
    if instruction:
        return instruction
    header = [
        ("summary", (summary or "").strip()),
        ("words", ", ".join(word_slots(words))),
        ("features", ", ".join(f for f in features if f)),
    ]
    kept = [(k, v) for k, v in header if v and k in HEADER_KEYS]
    if not kept:
        return ""
    return compose_instruct_record(kept, "x")[: -len(STORY_MARKER + "x")]


def _str_list(
    path: Any, value: Any, name: str, record_no: int, slots: bool = False
) -> tuple[str, ...]:
    """A list field; `slots`: recipe words, whose empty entries hold a role's place."""
    if value is None:
        return ()
    if isinstance(value, str):  # "hang, foot, cute" as Instruct headers write it
        items = value.split(",")
        return tuple(word_slots(items) if slots else (v.strip() for v in items if v.strip()))
    if not isinstance(value, list | tuple):
        raise ImportFormatError(path, f"'{name}' must be a list", record_no=record_no)
    if slots:
        return tuple(word_slots(value))
    return tuple(str(v) for v in value if v is not None and str(v) != "")


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def story_from_record(
    path: str | os.PathLike[str], rec: Any, record_no: int, end_offset: int | None = None
) -> ImportedStory:
    """An ImportedStory from one JSON record (release record or a variant, see module doc)."""
    if not isinstance(rec, dict):
        raise ImportFormatError(path, "record is not a JSON object", record_no=record_no)
    text = next((rec[k] for k in _TEXT_KEYS if isinstance(rec.get(k), str)), None)
    if text is None:
        raise ImportFormatError(
            path, "record has no 'story' (or 'text') string", record_no=record_no
        )
    unknown = [k for k in rec if k not in _KNOWN_TOP]
    instr = rec.get("instruction") or {}
    if isinstance(instr, str):  # an Instruct header kept as text
        instr = {}
    if not isinstance(instr, dict):
        raise ImportFormatError(path, "'instruction' is not an object", record_no=record_no)
    unknown += [f"instruction.{k}" for k in instr if k not in _KNOWN_INSTRUCTION]
    recipe = rec.get("recipe") or {}
    if not isinstance(recipe, dict):
        raise ImportFormatError(path, "'recipe' is not an object", record_no=record_no)
    unknown += [f"recipe.{k}" for k in recipe if k not in _KNOWN_RECIPE]

    roles = [recipe.get(r, rec.get(r)) for r in ("verb", "noun", "adjective")]
    if any(isinstance(r, str) and r for r in roles):  # named roles: nothing left to guess
        words = tuple(r if isinstance(r, str) else "" for r in roles)
    else:  # a list: the release's order verb, noun, adjective
        words = _str_list(path, instr.get("words"), "words", record_no, slots=True)
        if not words:
            listed = rec.get("words") or recipe.get("words")
            words = _str_list(path, listed, "words", record_no, slots=True)
    if len(words) > 3:  # the store keeps a recipe's three words
        unknown.append("words beyond the third")
    features = _str_list(path, instr.get("features"), "features", record_no)
    if not features:
        features = _str_list(path, rec.get("features"), "features", record_no)
    # The release spells the key "prompt:" (with the colon); accept both and a top-level one.
    prompt = _opt_str(instr.get("prompt:", instr.get("prompt"))) or _opt_str(rec.get("prompt"))
    source = _opt_str(rec.get("model")) or _opt_str(rec.get("source"))
    if source is not None and source.startswith(_PROVENANCE_PREFIXES):
        source = None  # a provenance label, not a model
    header = rec.get("instruct_header")
    if not isinstance(header, str) and isinstance(rec.get("instruction"), str):
        header = rec["instruction"]
    return ImportedStory(
        text=text.strip(),
        summary=_opt_str(rec.get("summary")),
        words=words,
        features=features,
        prompt=prompt,
        source=source,
        instruction_text=header or None,
        line_or_record_no=record_no,
        random_sentence=_opt_str(rec.get("random_sentence")),
        end_offset=end_offset,
        unknown_keys=tuple(unknown),
    )


class UnknownFields:
    """Counts of the record fields nothing reads, for the one warning line of an import."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, item: ImportedStory) -> None:
        if item.unknown_keys:
            self.counts.update(item.unknown_keys)

    def line(self) -> str | None:
        if not self.counts:
            return None
        parts = [f"{k} ({n} records)" for k, n in sorted(self.counts.items())]
        return "fields not imported (not understood): " + ", ".join(parts)
