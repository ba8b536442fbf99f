"""Sketch figures against exact counts on real TinyStories text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from datasketch import HyperLogLogPlusPlus

from service.dataset.minhash import normalize_text
from service.store.diversity_sketch import (
    HLL_P,
    Sketch,
    StoryFacts,
    hll_registers,
    text_ngram_hashes,
)

SAMPLE = Path(__file__).parents[1] / "data" / "TinyStories-train-sample1200.txt"


def _texts() -> list[str]:
    return [t.strip() for t in SAMPLE.read_text().split("<|endoftext|>") if t.strip()]


def test_registers_match_datasketch() -> None:
    hashes = text_ngram_hashes(_texts()[:100], 2)
    ours = hll_registers(hashes)
    theirs = HyperLogLogPlusPlus(p=HLL_P, hashfunc=int)
    for h in hashes.tolist():
        theirs.update(h)
    assert np.array_equal(ours.astype(np.int8), theirs.reg)


def test_distinct_n_within_two_percent_of_exact_and_merge_is_order_free() -> None:
    texts = _texts()
    whole = Sketch().add_stories(StoryFacts(t) for t in texts)
    halves = Sketch().add_stories(StoryFacts(t) for t in texts[600:])
    halves.add(Sketch().add_stories(StoryFacts(t) for t in texts[:600]))
    assert halves.distinct() == whole.distinct() and halves.ngrams == whole.ngrams
    words = [normalize_text(t).split() for t in texts]
    for n in (1, 2, 3):
        grams = [tuple(w[i : i + n]) for w in words for i in range(len(w) - n + 1)]
        exact = len(set(grams)) / len(grams)
        assert abs(whole.distinct()[f"distinct_{n}"] - exact) / exact < 0.02
    assert whole.stories == 1200 and sum(whole.length_hist) == 1200
    opening = max((c, t) for (k, t), c in whole.terms.items() if k == "opening")
    assert opening == (644, "once upon a time there")
