"""Parsing judge answers: a strict pattern first, then a lenient fallback."""

from __future__ import annotations

import re
from dataclasses import dataclass

CATEGORIES = ("grammar", "creativity", "consistency", "plot")
REQUIRED = ("grammar", "creativity", "consistency")  # the paper's sample answer omits Plot

STRICT_GPT_EVAL = re.compile(
    r"Grammar:\s*(?P<grammar>\d{1,2})/10,\s*Creativity:\s*(?P<creativity>\d{1,2})/10,\s*"
    r"Consistency:\s*(?P<consistency>\d{1,2})/10,\s*Plot:\s*(?P<plot>\d{1,2})/10,\s*"
    r"Age group:\s*(?P<age>[A-F])\b"
)
_NUMBER = r"(\d{1,2}(?:\.\d+)?)"
_AGE = re.compile(r"age(?:\s+group)?\s*(?:is|:|-)?\s*\**\s*\(?\s*([A-F])\b(?!\w)", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedScores:
    scores: dict[str, float | None]
    age_group: str | None
    method: str  # "strict" | "lenient"


def _lenient_score(label: str, text: str) -> float | None:
    # "Grammar: 8/10", "grammar - 8 out of 10", "**Grammar**: 8 / 10", "Grammar score: 8/10"
    pattern = re.compile(
        rf"{label}\w*\**\s*(?:score)?\s*(?:is|:|-|=)?\s*\**\s*{_NUMBER}\s*(?:/|out\s+of)\s*10",
        re.IGNORECASE,
    )
    m = pattern.search(text)
    if not m:
        return None
    value = float(m.group(1))
    return value if 0 <= value <= 10 else None


def parse_gpt_eval(text: str) -> ParsedScores | None:
    """Scores for grammar/creativity/consistency/plot and the age group, or None if unparseable."""
    m = STRICT_GPT_EVAL.search(text or "")
    if m and all(0 <= int(m.group(c)) <= 10 for c in CATEGORIES):
        return ParsedScores({c: float(m.group(c)) for c in CATEGORIES}, m.group("age"), "strict")
    scores = {c: _lenient_score(c, text or "") for c in CATEGORIES}
    if any(scores[c] is None for c in REQUIRED):
        return None
    age = _AGE.search(text or "")
    return ParsedScores(scores, age.group(1).upper() if age else None, "lenient")


def answer_template(rubric_text: str) -> str:
    """The lines after `Answer in the format:` in a rubric turn."""
    _, sep, tail = rubric_text.partition("Answer in the format:")
    if not sep or "<score>" not in tail:
        raise ValueError("rubric has no `Answer in the format:` template with <score>/10")
    return tail.strip()


def template_labels(template: str) -> list[str]:
    return [m.strip() for m in re.findall(r"([A-Za-z][A-Za-z _-]*?)\s*:\s*<score>", template)]


def parse_template(text: str, template: str) -> ParsedScores | None:
    """Parse an answer to an `Answer in the format:` template: exact template, then per label."""
    labels = template_labels(template)
    keys = [re.sub(r"\W+", "_", lab.lower()).strip("_") for lab in labels]
    strict = re.escape(template).replace(re.escape("<score>"), r"(\d{1,2})")
    strict = re.sub(r"(\\ )+", r"\\s+", strict)
    m = re.search(strict, text or "")
    if m:
        values = [float(v) for v in m.groups()]
        if all(0 <= v <= 10 for v in values):
            return ParsedScores(dict(zip(keys, values, strict=True)), None, "strict")
    scores: dict[str, float | None] = {}
    for key, label in zip(keys, labels, strict=True):
        scores[key] = _lenient_score(re.escape(label).replace(r"\ ", r"\s+"), text or "")
    if any(v is None for v in scores.values()):
        return None
    return ParsedScores(scores, None, "lenient")
