"""Parsing judge answers: the exact format first, then JSON, tables and labelled scores.

Real judges (GPT-4o, Claude, Llama-3-70B, Qwen) rarely answer in the paper's exact line: they
bold labels, use lists and tables, JSON, `name - X`, `X out of 10`, or put the grade after
prose. `data/judge_answers.yaml` is the corpus this module is tested against.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

CATEGORIES = ("grammar", "creativity", "consistency", "plot")
REQUIRED = ("grammar", "creativity", "consistency")  # the paper's sample answer omits Plot

# The paper's age groups; a judge may answer with the range instead of the letter.
AGE_RANGES = {"A": (0, 3), "B": (4, 5), "C": (6, 7), "D": (8, 9), "E": (10, 12), "F": (13, 16)}

STRICT_GPT_EVAL = re.compile(
    r"Grammar:\s*(?P<grammar>\d{1,2})/10,\s*Creativity:\s*(?P<creativity>\d{1,2})/10,\s*"
    r"Consistency:\s*(?P<consistency>\d{1,2})/10,\s*Plot:\s*(?P<plot>\d{1,2})/10,\s*"
    r"Age group:\s*(?P<age>[A-F])\b"
)
# Stems, so "grammatical correctness", "creative", "consistent with the beginning" all count.
_GPT_EVAL_LABELS = {
    "grammar": r"gramm\w*",
    "creativity": r"creativ\w*",
    "consistency": r"consisten\w*",
    "plot": r"plot\w*",
}
_WORDS = {
    w: float(i)
    for i, w in enumerate("zero one two three four five six seven eight nine ten".split())
}
_NUM = r"(?:\d{1,3}(?:\.\d+)?|zero|one|two|three|four|five|six|seven|eight|nine|ten)"
_VALUE = rf"(?P<lo>{_NUM})(?:\s*(?:-|–|to)\s*(?P<hi>{_NUM}))?"
# Bare numbers (no "/10") only as digits: "Grammar is one of its strengths" is not a score.
_DIGITS = r"(?P<lo>\d{1,3}(?:\.\d+)?)(?:\s*(?:-|–)\s*(?P<hi>\d{1,2}))?"
_SCALE = r"\**\s*(?:/|out\s+of|of)\s*(?:10|ten)\b"
# A number followed by another scale ("4/5", "80%") is not a score out of 10.
_NOT_OTHER_SCALE = r"(?!\s*(?:/\s*\d|%|out\s+of\s+(?!10|ten)\w|\.\d))"
_B = r"(?:\*\*|__|\*|_)?"  # optional markdown emphasis around labels and values


@dataclass(frozen=True)
class ParsedScores:
    scores: dict[str, float | None]
    age_group: str | None
    method: str  # "strict" | "lenient"


def _number(lo: str, hi: str | None) -> float | None:
    def one(s: str) -> float:
        return _WORDS[s.lower()] if s.lower() in _WORDS else float(s)

    value = one(lo) if hi is None else (one(lo) + one(hi)) / 2  # "8-9/10" -> 8.5
    return value if 0 <= value <= 10 else None


def _label_patterns(label: str) -> tuple[re.Pattern[str], ...]:
    """Explicit scale after the label, `N/10 for <label>`, a heading with the score below it,
    then a bare number right after the label."""
    head = rf"(?<![A-Za-z]){label}"
    # Words between label and score: "Consistency with the story's beginning: 7/10".
    # No conjunctions: in "7/10 for consistency and 5/10 for plot" the 5 belongs to plot.
    tail = r"(?:(?!\b(?:and|for|but|while|than)\b)[A-Za-z'’ ]){0,45}?(?:\([^)\n\d]{0,40}\))?"
    sep = rf"\s*{_B}\s*(?:[:：=|(\-–—]|\bis\b|\bwas\b|\bscore\b|\brating\b)?\s*{_B}\s*"
    scaled = re.compile(
        rf"{head}{_B}{tail}{sep}(?:[:：=|(\-–—]\s*{_B}\s*)?{_VALUE}\s*{_SCALE}", re.IGNORECASE
    )
    bare_sep = rf"\s*{_B}\s*(?:score|rating)?\s*(?:[:：=|(\-–—]|\bis\b)\s*{_B}\s*"
    bare = re.compile(
        rf"{head}{_B}(?:\s+(?:score|rating))?{bare_sep}{_DIGITS}{_NOT_OTHER_SCALE}(?!\w)",
        re.IGNORECASE,
    )
    after = re.compile(
        rf"{_VALUE}\s*{_SCALE}{_B}\s+(?:for|on|in)\s+(?:the\s+|its\s+)?{label}", re.IGNORECASE
    )
    # "### Grammar" on its own line, "Score: 8/10" on the next one.
    heading = re.compile(
        rf"^[ \t#>*\-\d.]*{_B}{label}{_B}[ \t]*[:：]?[ \t]*{_B}[ \t]*\n[ \t]*"
        rf"[^\n\d]{{0,40}}?{_VALUE}\s*{_SCALE}",
        re.IGNORECASE | re.MULTILINE,
    )
    return scaled, after, heading, bare


def _labelled_score(text: str, label: str) -> float | None:
    """A score for one label: a scaled number near it, `N/10 for label`, then a bare number."""
    for pattern in _label_patterns(label):
        for m in pattern.finditer(text):
            value = _number(m.group("lo"), m.group("hi"))
            if value is not None:
                return value
    return None


# ---- JSON and markdown tables --------------------------------------------------------------

_DECODER = json.JSONDecoder()


def _flatten(obj: object, prefix: str = "") -> Iterable[tuple[str, object]]:
    if isinstance(obj, dict) and "score" in obj and ({"category", "name", "criterion"} & set(obj)):
        name = next(obj[x] for x in ("category", "name", "criterion") if x in obj)
        yield str(name), obj["score"]
    elif isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{prefix} {k}".strip()
            if isinstance(v, dict) and not ({"score", "rating", "value"} & set(v)):
                yield from _flatten(v, key)
            elif isinstance(v, dict):
                yield key, next(v[x] for x in ("score", "rating", "value") if x in v)
            else:
                yield key, v
    elif isinstance(obj, list):
        for item in obj:
            yield from _flatten(item, prefix)


def _json_pairs(text: str) -> list[tuple[str, object]]:
    """Every JSON object or array in the answer (fenced or not), flattened to (key, value)."""
    pairs: list[tuple[str, object]] = []
    pos = 0
    while True:
        starts = [i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0]
        if not starts:
            return pairs
        start = min(starts)
        try:
            obj, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError:
            pos = start + 1
            continue
        if isinstance(obj, dict | list):
            pairs.extend(_flatten(obj))
        pos = end


def _table_pairs(text: str) -> list[tuple[str, object]]:
    """(label, value) from markdown tables, row-wise (`| Grammar | 8 |`) or column-wise."""
    rows = [
        [c.strip().strip("*_ ") for c in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.strip().startswith("|")
    ]
    rows = [r for r in rows if not all(re.fullmatch(r":?-{2,}:?", c) or not c for c in r)]
    pairs: list[tuple[str, object]] = []
    for r in rows:
        if len(r) >= 2:
            pairs.append((r[0], r[1]))
    for header, values in itertools.pairwise(rows):
        if len(header) == len(values):
            pairs.extend(zip(header, values, strict=True))
    return pairs


def _value(v: object) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v) if 0 <= v <= 10 else None
    if isinstance(v, str):
        m = re.fullmatch(rf"\s*{_B}{_VALUE}{_B}(?:\s*{_SCALE})?{_B}\s*(?:\(.*\))?\s*\.?", v, re.I)
        if m:
            return _number(m.group("lo"), m.group("hi"))
    return None


def _structured_score(pairs: list[tuple[str, object]], label: str) -> float | None:
    for key, v in pairs:
        if re.search(rf"(?<![A-Za-z]){label}", key.replace("_", " "), re.IGNORECASE):
            value = _value(v)
            if value is not None:
                return value
    return None


# ---- age group -----------------------------------------------------------------------------

# A lone capital letter: never a letter inside a word, never "A" starting a sentence ("A story").
_LETTER = r"(?<![A-Za-z])(?-i:(?P<letter>[A-F]))(?![A-Za-z'’])(?-i:(?![ \t]+[a-z]))"
_AGE_LABEL = r"(?<![A-Za-z])age(?:\s+group)?(?![a-z])"
_RANGE = r"(?P<a>\d{1,2})\s*(?:-|–|to)\s*(?P<b>\d{1,2})|(?P<u>3)\s*(?:or|and)\s*(?:under|younger)"
_AGE_NEAR = re.compile(
    rf"{_AGE_LABEL}(?:[*_:：\s]*\n\s*)?[^\n.]{{0,60}}?(?:(?:\(\s*)?{_B}{_LETTER}|{_RANGE})",
    re.IGNORECASE,
)
# "age group: d": a lower-case letter counts only when it is the whole value.
_AGE_LOWER = re.compile(
    rf"{_AGE_LABEL}\s*{_B}\s*[:：=\-–—]\s*{_B}(?P<low>[a-f]){_B}\s*(?=$|[(.,;)])",
    re.IGNORECASE | re.MULTILINE,
)
_GROUP = re.compile(rf"\bgroup\s+{_B}\(?{_LETTER}", re.IGNORECASE)


def _letter_from_range(a: str | None, b: str | None, under: str | None) -> str | None:
    if under:
        return "A"
    if a is None or b is None:
        return None
    span = (int(a), int(b))
    for letter, (lo, hi) in AGE_RANGES.items():
        if span == (lo, hi) or (letter == "A" and span[1] <= 3):
            return letter
    return None


def _age_from_value(v: object) -> str | None:
    if not isinstance(v, str):
        return None
    for pattern in (rf"\(\s*{_LETTER}\s*\)", rf"^\s*{_B}{_LETTER}"):
        m = re.search(pattern, v)
        if m:
            return m.group("letter")
    m = re.search(_RANGE, v)
    return _letter_from_range(m.group("a"), m.group("b"), m.group("u")) if m else None


def parse_age(text: str, pairs: list[tuple[str, object]] | None = None) -> str | None:
    """The age-group letter A-F near an `age` label, from `(B)`, a bold letter or a range."""
    for key, v in pairs or []:
        if re.search(r"\bage\b", key.replace("_", " "), re.IGNORECASE):
            letter = _age_from_value(v)
            if letter:
                return letter
    for m in _AGE_NEAR.finditer(text):
        if m.group("letter"):
            return m.group("letter")
        found = _letter_from_range(m.group("a"), m.group("b"), m.group("u"))
        if found:
            return found
    m = _GROUP.search(text)
    if m:
        return m.group("letter")
    m = _AGE_LOWER.search(text)
    return m.group("low").upper() if m else None


# ---- entry points --------------------------------------------------------------------------


def _scores(text: str, labels: dict[str, str]) -> tuple[dict[str, float | None], list]:
    pairs = _json_pairs(text) + _table_pairs(text)
    out: dict[str, float | None] = {}
    for key, label in labels.items():
        value = _structured_score(pairs, label)
        out[key] = value if value is not None else _labelled_score(text, label)
    return out, pairs


def parse_gpt_eval(text: str) -> ParsedScores | None:
    """Scores for grammar/creativity/consistency/plot and the age group, or None if unparseable."""
    text = text or ""
    m = STRICT_GPT_EVAL.search(text)
    if m and all(0 <= int(m.group(c)) <= 10 for c in CATEGORIES):
        return ParsedScores({c: float(m.group(c)) for c in CATEGORIES}, m.group("age"), "strict")
    scores, pairs = _scores(text, _GPT_EVAL_LABELS)
    if any(scores[c] is None for c in REQUIRED):
        return None
    return ParsedScores(scores, parse_age(text, pairs), "lenient")


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
    text = text or ""
    labels = template_labels(template)
    keys = [re.sub(r"\W+", "_", lab.lower()).strip("_") for lab in labels]
    strict = re.escape(template).replace(re.escape("<score>"), r"(\d{1,2})")
    strict = re.sub(r"(\\ )+", r"\\s+", strict)
    m = re.search(strict, text)
    if m:
        values = [float(v) for v in m.groups()]
        if all(0 <= v <= 10 for v in values):
            return ParsedScores(dict(zip(keys, values, strict=True)), None, "strict")
    # "instruction following", "instruction-following", "instruction_following" all match.
    patterns = {
        key: r"[\s_-]+".join(re.escape(w) for w in re.split(r"[\s_-]+", lab))
        for key, lab in zip(keys, labels, strict=True)
    }
    scores, _ = _scores(text, patterns)
    if len(keys) == 1 and scores[keys[0]] is None:
        scores[keys[0]] = _only_score(text)
    if any(v is None for v in scores.values()):
        return None
    return ParsedScores(scores, None, "lenient")


_ANY_SCALED = re.compile(rf"(?<![\d.]){_VALUE}\s*{_SCALE}", re.IGNORECASE)


def _only_score(text: str) -> float | None:
    """One-category rubrics: `**Score: 7/10**` or the single distinct N/10 in the answer."""
    values = {_number(m.group("lo"), m.group("hi")) for m in _ANY_SCALED.finditer(text)}
    values.discard(None)
    return values.pop() if len(values) == 1 else None


_VERDICT = re.compile(r"\[\[\s*([ABC])\s*\]\]")
_VERDICT_WORDS = re.compile(
    r"(?:final\s+)?verdict\s*[:：-]?\s*\**\s*\[?\s*(?:completion\s+)?((?-i:[ABC])|tie)\b"
    r"|\b(?:completion|response|story)\s+([AB])\s+is\s+(?:clearly\s+|slightly\s+)?better\b"
    r"|\b(it'?s\s+a\s+tie|both\s+are\s+equally\s+good)\b",
    re.IGNORECASE,
)


def parse_verdict(text: str) -> ParsedScores | None:
    """A pairwise verdict as `preference` 1.0 (A better), 0.0 (B better) or 0.5 (tie).

    The last `[[X]]` wins (judges sometimes quote the format before answering); then a
    `Verdict: A` line or "Completion B is better".
    """
    found = _VERDICT.findall(text or "")
    if found:
        letter, method = found[-1], "strict"
    else:
        matches = list(_VERDICT_WORDS.finditer(text or ""))
        if not matches:
            return None
        m = matches[-1]
        letter = (m.group(1) or m.group(2) or "C").upper()
        letter, method = ("C" if letter == "TIE" else letter), "lenient"
    return ParsedScores({"preference": {"A": 1.0, "B": 0.0, "C": 0.5}[letter]}, None, method)
