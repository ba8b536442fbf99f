"""Checks on a finished story; every rejection carries the name of the check that failed."""

from __future__ import annotations

import logging
import re
import sys
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from vocab import Vocabulary, basic_words, default_vocabulary

logger = logging.getLogger(__name__)

CHECK_NAMES: tuple[str, ...] = (
    "empty",
    "separator",
    "refusal",
    "truncated",
    "too_short",
    "too_long",
    "repetition",
    "missing_words",
    "out_of_vocabulary",
)

SEPARATOR = "<|endoftext|>"  # between stories in the TinyStories release files

# Refusals say so in their first sentence ("I'm sorry, but I can't ...") or talk about being an
# AI. A story's own "I'm sorry" sits inside quotes and is removed before matching.
DEFAULT_REFUSAL_START: tuple[str, ...] = (
    r"(i'm|i am) sorry\b",
    r"sorry,? (but )?i\b",
    r"i apologi[sz]e\b",
    r"i (cannot|can't|can not|won't|will not|am unable to|'m unable to|am not able to)\b",
    r"(unfortunately|i'm afraid)\b.*\b(cannot|can't|unable)\b",
)
DEFAULT_REFUSAL_ANYWHERE: tuple[str, ...] = (
    r"\bas an ai\b",
    r"\bas a(n)? (ai )?language model\b",
    r"\bi (cannot|can't|am unable to|'m unable to) (write|create|generate|produce|fulfil|"
    r"fulfill|comply|assist|help with)\b.{0,40}\b(story|request|content)\b",
)


@dataclass(frozen=True)
class CheckConfig:
    """Limits of the story checks. Defaults pass >= 97% of real TinyStories stories."""

    # Real stories run 61-837 words (1,200-story sample); the prompt asks for 3-5 paragraphs.
    min_words: int = 50
    max_words: int = 1000
    # Share of counted words outside the vocabulary + basic words; unseen real stories: median
    # 0.8%, 97th percentile 4.4%, 99th 5.3%.
    max_oov_share: float = 0.06
    # Stories shorter than this are not scored on vocabulary: a few rare words would dominate.
    oov_min_words: int = 20
    # Share of words inside a word 10-gram that occurs again in the story: a model stuck in a
    # loop (a paragraph twice, "and they played and they played ..."). Real stories, refrains
    # included: 97% have none, the 1,200-story sample's highest is 0.27.
    max_repeated_share: float = 0.4
    repeat_ngram: int = 10
    truncated_reasons: tuple[str, ...] = ("length",)
    refusal_start: tuple[str, ...] = DEFAULT_REFUSAL_START
    refusal_anywhere: tuple[str, ...] = DEFAULT_REFUSAL_ANYWHERE
    # Words accepted on top of the vocabulary and the packaged basic words.
    extra_words: frozenset[str] = field(default_factory=frozenset)
    disabled: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.min_words < 0 or self.max_words < self.min_words:
            raise ValueError(
                f"word limits must satisfy 0 <= min_words <= max_words, got "
                f"min_words={self.min_words} max_words={self.max_words}"
            )
        if not 0.0 <= self.max_oov_share <= 1.0:
            raise ValueError(f"max_oov_share must be in [0, 1], got {self.max_oov_share}")
        if not 0.0 <= self.max_repeated_share <= 1.0:
            raise ValueError(f"max_repeated_share must be in [0, 1], got {self.max_repeated_share}")
        if self.repeat_ngram < 2:
            raise ValueError(f"repeat_ngram must be >= 2, got {self.repeat_ngram}")
        unknown = set(self.disabled) - set(CHECK_NAMES)
        if unknown:
            raise ValueError(
                f"unknown check(s) {', '.join(sorted(unknown))} (checks: {', '.join(CHECK_NAMES)})"
            )


@dataclass(frozen=True)
class CheckResult:
    """Outcome of all checks on one story."""

    accepted: bool
    rejections: tuple[str, ...]
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "accepted": self.accepted,
            "rejections": list(self.rejections),
            "details": dict(self.details),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        """Inverse of `to_dict`."""
        return cls(
            accepted=bool(data["accepted"]),
            rejections=tuple(data.get("rejections", ())),
            details=dict(data.get("details", {})),
        )


_WORD_RE = re.compile(r"[A-Za-z]+(?:['’-][A-Za-z]+)*")


@lru_cache(maxsize=1)
def _unicode_word_re() -> re.Pattern[str]:
    """_WORD_RE for letters of any script: Python's `re` has no \\p{M}, and without the
    combining marks a Devanagari word would split at every vowel sign."""
    marks: list[str] = []
    start = None
    # Marks lie in planes 0-1 and in plane 14's variation selectors; ~30 ms, once.
    for cp in [*range(0x20000), *range(0xE0000, 0xE1000), sys.maxunicode + 1]:
        is_mark = cp <= sys.maxunicode and unicodedata.category(chr(cp)).startswith("M")
        if is_mark and start is None:
            start = cp
        elif not is_mark and start is not None:
            marks.append(f"\\U{start:08x}-\\U{cp - 1:08x}")
            start = None
    # [^\W\d_]: a letter (a few numeric signs such as '²' too, harmless in a story).
    part = rf"[^\W\d_](?:[^\W\d_]|[{''.join(marks)}])*"
    return re.compile(rf"{part}(?:['’-]{part})*")


def story_words(text: str) -> list[str]:
    """The words of a story, in NFC; English text takes the ASCII pattern (the fast path)."""
    if text.isascii():
        return _WORD_RE.findall(text)
    return _unicode_word_re().findall(unicodedata.normalize("NFC", text))


_QUOTED_RE = re.compile(r"\"[^\"]*\"|“[^”]*”")
# Irregular forms lemminflect misses or that child stories spell their own way.
_IRREGULAR: dict[str, tuple[str, ...]] = {
    "hang": ("hung", "hanged"),
    "lie": ("lay", "lain", "lying", "lied"),
    "dive": ("dove", "dived"),
    "light": ("lit", "lighted"),
    "dream": ("dreamt", "dreamed"),
    "spill": ("spilt", "spilled"),
    "spoil": ("spoilt", "spoiled"),
    "kneel": ("knelt", "kneeled"),
    "leap": ("leapt", "leaped"),
    "burn": ("burnt", "burned"),
    "learn": ("learnt", "learned"),
    "smell": ("smelt", "smelled"),
    "mouse": ("mice",),
    "foot": ("feet",),
    "tooth": ("teeth",),
    "goose": ("geese",),
    "child": ("children",),
    "person": ("people",),
    "man": ("men",),
    "woman": ("women",),
}


def _normalize(word: str) -> str:
    if not word.isascii():
        word = unicodedata.normalize("NFC", word)
    word = word.lower().replace("’", "'")
    if word.endswith("'s"):
        word = word[:-2]
    return word


@lru_cache(maxsize=8192)
def word_forms(word: str) -> frozenset[str]:
    """`word` and its inflections as any part of speech (hang: hangs, hung, hanged, hanging)."""
    from lemminflect import getAllInflections, getAllInflectionsOOV

    base = _normalize(word)
    forms = {base}
    for inflections in getAllInflections(base).values():
        forms.update(f.lower() for f in inflections)
    if len(forms) == 1:
        # Unknown to the lexicon: regular noun and verb endings.
        for upos in ("NOUN", "VERB"):
            for inflections in getAllInflectionsOOV(base, upos=upos).values():
                forms.update(f.lower() for f in inflections)
    forms.update(_IRREGULAR.get(base, ()))
    return frozenset(forms)


@lru_cache(maxsize=65536)
def _lemmas(token: str) -> frozenset[str]:
    from lemminflect import getAllLemmas

    word = _normalize(token)
    found = {word}
    for lemmas in getAllLemmas(word).values():
        found.update(lemma.lower() for lemma in lemmas)
    for lemma, forms in _IRREGULAR.items():
        if word in forms:
            found.add(lemma)
    return frozenset(found)


class StoryChecker:
    """Runs every check on a story and reports each one that rejects it."""

    def __init__(
        self, vocabulary: Vocabulary | None = None, config: CheckConfig | None = None
    ) -> None:
        self.vocabulary = vocabulary if vocabulary is not None else default_vocabulary()
        self.config = config if config is not None else CheckConfig()
        self._known = (
            frozenset(w.lower() for w in self.vocabulary.words)
            | basic_words()
            | frozenset(w.lower() for w in self.config.extra_words)
        )
        flags = re.IGNORECASE | re.DOTALL
        self._refusal_start = [re.compile(p, flags) for p in self.config.refusal_start]
        self._refusal_anywhere = [re.compile(p, flags) for p in self.config.refusal_anywhere]

    def check(
        self, text: str | None, *, finish_reason: str | None = None, required_words: list[str]
    ) -> CheckResult:
        """All checks on one story text."""
        config = self.config
        text = text or ""
        rejections: list[str] = []
        details: dict[str, Any] = {"finish_reason": finish_reason}

        def reject(name: str) -> None:
            if name not in config.disabled:
                rejections.append(name)

        if finish_reason in config.truncated_reasons:
            reject("truncated")
        tokens = story_words(text)
        details["word_count"] = len(tokens)
        if not tokens:
            reject("empty")
            return CheckResult(not rejections, tuple(_ordered(rejections)), details)

        if SEPARATOR in text:  # a local model's end-of-text token: the release files split on it
            reject("separator")
        refusal = self._refusal(text)
        if refusal is not None:
            details["refusal_match"] = refusal
            reject("refusal")
        if len(tokens) < config.min_words:
            reject("too_short")
        if len(tokens) > config.max_words:
            reject("too_long")

        repeated = repeated_share(tokens, config.repeat_ngram)
        if repeated:
            details["repeated_share"] = round(repeated, 4)
        if repeated > config.max_repeated_share:
            reject("repetition")

        missing = self.missing_words(tokens, text, required_words)
        if missing:
            details["missing_words"] = missing
            reject("missing_words")

        oov = self.out_of_vocabulary(tokens)
        counted = max(details["word_count"] - oov["names"], 0)
        share = len(oov["words"]) / counted if counted else 0.0
        details["oov_share"] = round(share, 4)
        if oov["words"]:
            details["oov_words"] = sorted(set(oov["words"]))[:20]
        if counted >= config.oov_min_words and share > config.max_oov_share:
            reject("out_of_vocabulary")
        result = CheckResult(not rejections, tuple(_ordered(rejections)), details)
        logger.debug(
            "story checked accepted=%s rejections=%s words=%d oov_share=%.4f",
            result.accepted,
            ",".join(result.rejections) or "-",
            details["word_count"],
            share,
        )
        return result

    def _refusal(self, text: str) -> str | None:
        unquoted = _QUOTED_RE.sub(" ", text)
        opening = unquoted.lstrip(" \n\t\"'“")[:300]
        for pattern in self._refusal_start:
            match = pattern.match(opening)
            if match:
                return match.group(0)[:80]
        for pattern in self._refusal_anywhere:
            match = pattern.search(unquoted)
            if match:
                return match.group(0)[:80]
        return None

    @staticmethod
    def missing_words(tokens: list[str], text: str, required_words: list[str]) -> list[str]:
        """Required words with no form of theirs in the story (hang counts in hung)."""
        present = {_normalize(t) for t in tokens}
        spaced = " ".join(_normalize(t).replace("-", " ") for t in tokens)
        missing = []
        for word in required_words:
            word = word.strip()
            if not word:
                continue
            if "-" in word or " " in word:
                # ice-cream: also written "ice cream"; the last part may inflect (ice-creams).
                parts = re.split(r"[-\s]+", word.lower())
                head = " ".join(parts[:-1])
                if not any(f"{head} {form}" in f" {spaced} " for form in word_forms(parts[-1])):
                    missing.append(word)
                continue
            if not (word_forms(word) & present):
                missing.append(word)
        return missing

    def out_of_vocabulary(self, tokens: list[str]) -> dict[str, Any]:
        """Words outside the vocabulary and basic words; capitalised unknowns count as names."""
        unknown: list[str] = []
        names = 0
        for token in tokens:
            if self.is_known(token):
                continue
            if token[0].isupper():
                names += 1  # Lily, Ben, Max: names are free
                continue
            unknown.append(_normalize(token))
        return {"words": unknown, "names": names}

    def is_known(self, token: str) -> bool:
        """Whether a word (any inflection) is in the vocabulary or the basic words."""
        lemmas = _lemmas(token)
        if lemmas & self._known:
            return True
        if "-" in token:
            return all(self.is_known(part) for part in token.split("-") if part)
        return False


def repeated_share(tokens: list[str], n: int) -> float:
    """Share of the words that lie inside a word n-gram occurring more than once (case-folded)."""
    if len(tokens) < 2 * n:
        return 0.0
    words = [t.lower() for t in tokens]
    grams = list(zip(*(words[i:] for i in range(n)), strict=False))
    if len(set(grams)) == len(grams):  # most stories: no n-gram twice
        return 0.0
    counts = Counter(grams)
    covered = bytearray(len(words))
    for i, gram in enumerate(grams):
        if counts[gram] > 1:
            covered[i : i + n] = b"\x01" * n
    return sum(covered) / len(words)


def _ordered(names: list[str]) -> list[str]:
    return sorted(set(names), key=CHECK_NAMES.index)
