"""TinyStories-Instruct records: header lines in a seeded random subset and order, then the story.

A record reads, as in the released TinyStoriesInstruct files::

    Features: Dialogue
    Words: quit, oak, gloomy
    Summary: Sara and Ben were playing in the park, ...
    Story: <space>
    <blank line>
    Sara and Ben were playing ...

and a file joins records as ``record + "\\n<|endoftext|>\\n"``.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable
from typing import Any

END_OF_TEXT = "<|endoftext|>"
STORY_MARKER = "Story: \n\n"
# Header keys as the records spell them, and the dict keys `parse_instruct_record` uses.
HEADER_KEYS: dict[str, str] = {
    "summary": "Summary",
    "words": "Words",
    "features": "Features",
    "random_sentence": "Random sentence",
}
_LABEL_TO_KEY = {label: key for key, label in HEADER_KEYS.items()}
# Each available header line is kept with this probability; the real files show records with
# two, three and four header lines, rarely none.
DEFAULT_INCLUDE_PROB = 0.75

_SENTENCE_RE = re.compile(r"[^.!?\n]*[.!?]+[\"”’']?|[^.!?\n]+$", re.MULTILINE)


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


def _one_line(text: str) -> str:
    return " ".join(text.split())


def sentences(story: str) -> list[str]:
    """The story's sentences, in order, each stripped (a closing quote stays with its sentence)."""
    found = (m.group(0).strip() for m in _SENTENCE_RE.finditer(story))
    return [s for s in found if s]


def random_sentence(story: str, seed: int) -> str:
    """One sentence of `story` chosen by `seed`; "" for a story without words.

    Sentences of three words or more are preferred so the line carries some content.
    """
    candidates = sentences(story)
    if not candidates:
        return ""
    longer = [s for s in candidates if len(s.split()) >= 3]
    return _rng("instruct-sentence", seed).choice(longer or candidates)


def compose_instruct_record(header: Iterable[tuple[str, str]], story: str) -> str:
    """A record from (key, value) header lines in the given order, then the story.

    Keys are those of HEADER_KEYS; values are already joined ("quit, oak, gloomy").
    """
    lines = []
    for key, value in header:
        if key not in HEADER_KEYS:
            raise ValueError(f"unknown instruct header {key!r} (known: {', '.join(HEADER_KEYS)})")
        lines.append(f"{HEADER_KEYS[key]}: {_one_line(value)}\n")
    return "".join(lines) + STORY_MARKER + story.strip()


def render_instruct_record(
    *,
    story: str,
    summary: str,
    words: list[str],
    features: list[str],
    random_sentence: str,
    seed: int,
    include_prob: float = DEFAULT_INCLUDE_PROB,
) -> str:
    """The TinyStories-Instruct text of one story (ends with the story, no end-of-text token).

    Each non-empty header line is kept with probability `include_prob` and the kept ones are
    shuffled, all from `seed`, so a record can be rendered again identically.
    """
    if not story.strip():
        raise ValueError("an instruct record needs a non-empty story")
    available = [
        ("summary", summary.strip()),
        ("words", ", ".join(w.strip() for w in words if w.strip())),
        ("features", ", ".join(f.strip() for f in features if f.strip())),
        ("random_sentence", random_sentence.strip()),
    ]
    rng = _rng("instruct-record", seed)
    kept = [(key, value) for key, value in available if value and rng.random() < include_prob]
    rng.shuffle(kept)
    return compose_instruct_record(kept, story)


def instruct_header(record: str) -> str:
    """The header lines of a record (the text before "Story: "), as the export's instruction."""
    return parse_instruct_record(record)["instruction"]


def parse_instruct_record(text: str) -> dict[str, Any]:
    """Split a record into its fields; ValueError on text that is not a record.

    Returns {"summary", "words", "features", "random_sentence"} (None/[] when absent),
    "story", "instruction" (the header lines, each ending in a newline) and "order" (header
    keys as they appear). A trailing <|endoftext|> is ignored.
    """
    body = text.strip("\n")
    if body.endswith(END_OF_TEXT):
        body = body[: -len(END_OF_TEXT)].rstrip("\n")
    marker_at = body.find("Story:")
    while marker_at > 0 and body[marker_at - 1] != "\n":
        marker_at = body.find("Story:", marker_at + 1)
    if marker_at < 0:
        raise ValueError("not an instruct record: no line starting with 'Story:'")
    header_text = body[:marker_at]
    story = body[marker_at + len("Story:") :].strip()
    result: dict[str, Any] = {
        "summary": None,
        "words": [],
        "features": [],
        "random_sentence": None,
        "story": story,
        "instruction": header_text,
        "order": [],
    }
    for lineno, line in enumerate(header_text.splitlines(), start=1):
        if not line.strip():
            continue
        label, sep, value = line.partition(": ")
        key = _LABEL_TO_KEY.get(label)
        if not sep or key is None:
            raise ValueError(f"not an instruct record: header line {lineno} is {line!r}")
        if key in result["order"]:
            raise ValueError(f"not an instruct record: header {label!r} appears twice")
        result["order"].append(key)
        if key in ("words", "features"):
            result[key] = [item.strip() for item in value.split(",") if item.strip()]
        else:
            result[key] = value.strip()
    return result


def format_instruct_file(records: Iterable[str]) -> str:
    """Records joined as in TinyStoriesInstruct-*.txt: each followed by "\\n<|endoftext|>\\n"."""
    return "".join(f"{record}\n{END_OF_TEXT}\n" for record in records)


def split_instruct_file(text: str) -> list[str]:
    """Inverse of `format_instruct_file`: the records of a TinyStoriesInstruct text."""
    return [part.strip("\n") for part in text.split(END_OF_TEXT) if part.strip()]
