"""Diversity sketches of stories: pure numpy, no database.

A `Sketch` sums what the diversity figures need over any number of stories, in memory that
does not grow with them: n-gram totals and HyperLogLog registers of the distinct n-grams
(n = 1, 2, 3), histograms of length, vocabulary share and nearest-neighbour Jaccard, feature
counts, recipe-word and opening-5-gram counts. Two sketches merge (`add`), so a batch's sketch
is added to a job's and to the overall one. Words are those of `minhash.normalize_text`, the
text every dedup hash sees.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from service.dataset.minhash import cached_word_ids, fmix64, normalized_words

# 2**14 registers: about 0.8% standard error on distinct counts, 16 KiB per sketch and n.
HLL_P = 14
HLL_M = 1 << HLL_P
NGRAM_ORDERS = (1, 2, 3)
OPENING_WORDS = 5
# Words per story (real TinyStories: 61-837 words, median 166, in the 1,200-story sample).
LENGTH_EDGES = (0, 50, 100, 150, 200, 250, 300, 400, 500, 700, 1000)
# Out-of-vocabulary share of a story (the checks' oov_share): the vocabulary share is 1 minus
# it. Real stories: median 0.8%, 99th percentile 5.3%; the checks reject above 6%.
OOV_EDGES = (0.0, 0.005, 0.01, 0.02, 0.03, 0.04, 0.06, 0.1)
# Estimated Jaccard to the nearest earlier cluster root: 0.1-wide buckets, the last one is 1.0
# (identical after normalisation). 0 also means "no root shared an LSH band".
NN_EDGES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# 0.1: beyond the shared opening formula of real stories; 0.3: the dedup threshold.
NN_THRESHOLDS = (0.1, 0.3, 0.5, 0.8)
RECIPE_KINDS = ("verb", "noun", "adjective")
TERM_KINDS = (*RECIPE_KINDS, "opening")

_U64 = np.uint64
_MULTIPLIERS = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], dtype=_U64)
_word_ids: dict[str, int] = {}


@dataclass(frozen=True)
class StoryFacts:
    """What a sketch reads of one story."""

    text: str
    verb: str | None = None
    noun: str | None = None
    adjective: str | None = None
    features: Sequence[str] = ()
    oov_share: float | None = None  # from the story's checks; None: not checked
    nn_jaccard: float | None = None  # None: no near-duplicate check (empty text)


def _ids(words: list[str]) -> np.ndarray:
    return np.array(cached_word_ids(words, _word_ids, limit=1_000_000), dtype=_U64)


def ngram_hashes(ids: np.ndarray, lengths: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of every word n-gram of each text (word ids `ids`, texts of `lengths`
    words, concatenated), never across two texts."""
    if ids.size == 0:
        return np.zeros(0, dtype=_U64)
    ends = np.cumsum(lengths)
    story = np.repeat(np.arange(len(lengths)), lengths)
    pos = np.arange(ids.size)
    pos = pos[pos + n - 1 < ends[story]]
    acc = np.zeros(len(pos), dtype=_U64)
    for j in range(n):
        acc += ids[pos + j] * _MULTIPLIERS[j]
    return fmix64(acc + _U64(n))


def text_ngram_hashes(texts: Sequence[str], n: int) -> np.ndarray:
    """ngram_hashes of raw texts (normalised and split first)."""
    split = [normalized_words(t) for t in texts]
    lengths = np.array([len(w) for w in split], dtype=np.int64)
    return ngram_hashes(_ids([w for words in split for w in words]), lengths, n)


def hll_registers(hashes: np.ndarray) -> np.ndarray:
    """HyperLogLog registers of 64-bit hashes, laid out as datasketch.HyperLogLogPlusPlus's
    (index: the low HLL_P bits; rank: 1 + leading zeros of the remaining 64 - HLL_P bits)."""
    regs = np.zeros(HLL_M, dtype=np.uint8)
    if hashes.size == 0:
        return regs
    index = (hashes & _U64(HLL_M - 1)).astype(np.int64)
    rest = (hashes >> _U64(HLL_P)).astype(np.float64)  # < 2**50: exact in a float64
    bit_length = np.frexp(rest)[1]
    rank = (64 - HLL_P) - bit_length + 1
    np.maximum.at(regs, index, rank.astype(np.uint8))
    return regs


def hll_count(registers: np.ndarray) -> float:
    """Distinct values behind the registers (datasketch's HyperLogLog++ estimator)."""
    from datasketch import HyperLogLogPlusPlus

    if not registers.any():
        return 0.0
    return float(HyperLogLogPlusPlus(p=HLL_P, reg=registers.astype(np.int8)).count())


def _count_buckets(hist: list[int], values: Iterable[float | None], edges: Sequence[float]) -> None:
    """Count each value (None: left out) in its bucket [edges[i], edges[i+1]) of `hist`; the
    last bucket is open, values below the first edge count in the first."""
    present = np.array([v for v in values if v is not None], dtype=np.float64)
    if present.size == 0:
        return
    bounds = np.asarray(edges, dtype=np.float64)
    index = np.maximum(np.searchsorted(bounds, present, side="right") - 1, 0)
    for i, n in enumerate(np.bincount(index, minlength=len(edges)).tolist()):
        hist[i] += n


@dataclass
class Sketch:
    """Running diversity sums of some stories."""

    stories: int = 0
    words: int = 0
    ngrams: list[int] = field(default_factory=lambda: [0] * len(NGRAM_ORDERS))
    hll: np.ndarray = field(
        default_factory=lambda: np.zeros((len(NGRAM_ORDERS), HLL_M), dtype=np.uint8)
    )
    length_hist: list[int] = field(default_factory=lambda: [0] * len(LENGTH_EDGES))
    vocab_hist: list[int] = field(default_factory=lambda: [0] * len(OOV_EDGES))
    nn_hist: list[int] = field(default_factory=lambda: [0] * len(NN_EDGES))
    features: Counter[str] = field(default_factory=Counter)
    terms: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add_stories(
        self, stories: Iterable[StoryFacts], words: Sequence[list[str]] | None = None
    ) -> Sketch:
        """Count a batch of stories in; returns self. `words`: each story's
        ``normalized_words`` (a caller that has them saves the normalisation)."""
        stories = list(stories)
        split = [normalized_words(s.text) for s in stories] if words is None else list(words)
        if len(split) != len(stories):
            raise ValueError(f"{len(split)} word lists for {len(stories)} stories")
        lengths = np.fromiter(map(len, split), dtype=np.int64, count=len(split))
        self.stories += len(stories)
        self.words += int(lengths.sum())
        _count_buckets(self.length_hist, lengths, LENGTH_EDGES)
        _count_buckets(self.vocab_hist, [s.oov_share for s in stories], OOV_EDGES)
        self.add_nearest(s.nn_jaccard for s in stories)
        features, terms = self.features, self.terms
        for story, story_words in zip(stories, split, strict=True):
            names = sorted({str(f) for f in story.features})
            features.update(names or [""])
            recipe = (story.verb, story.noun, story.adjective)
            for kind, word in zip(RECIPE_KINDS, recipe, strict=True):
                if word:
                    terms[kind, word.lower()] += 1
            if len(story_words) >= OPENING_WORDS:
                terms["opening", " ".join(story_words[:OPENING_WORDS])] += 1
        ids = _ids([w for story_words in split for w in story_words])
        for i, n in enumerate(NGRAM_ORDERS):
            hashes = ngram_hashes(ids, lengths, n)
            self.ngrams[i] += int(hashes.size)
            np.maximum(self.hll[i], hll_registers(hashes), out=self.hll[i])
        return self

    def add_nearest(self, nearest: Iterable[float | None]) -> Sketch:
        """Count stories' nearest-neighbour Jaccard in (None: not compared); returns self."""
        _count_buckets(self.nn_hist, nearest, NN_EDGES)
        return self

    def add(self, other: Sketch) -> Sketch:
        """Merge another sketch in (disjoint stories); returns self."""
        self.stories += other.stories
        self.words += other.words
        self.ngrams = [a + b for a, b in zip(self.ngrams, other.ngrams, strict=True)]
        np.maximum(self.hll, other.hll, out=self.hll)
        for name in ("length_hist", "vocab_hist", "nn_hist"):
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, [a + b for a, b in zip(mine, theirs, strict=True)])
        self.features.update(other.features)
        self.terms.update(other.terms)
        return self

    def distinct(self) -> dict[str, float | None]:
        """distinct-n: distinct n-grams over all n-grams (Li et al. 2016), n = 1, 2, 3."""
        out: dict[str, float | None] = {}
        for i, n in enumerate(NGRAM_ORDERS):
            total = self.ngrams[i]
            out[f"distinct_{n}"] = min(hll_count(self.hll[i]) / total, 1.0) if total else None
        return out
