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


def test_batch_counts_equal_story_by_story_counts() -> None:
    """Histograms are counted for a whole batch at once; given words change nothing."""
    import bisect

    from service.store.diversity_sketch import LENGTH_EDGES, NN_EDGES, OOV_EDGES

    texts = _texts()[:300]
    rng = np.random.default_rng(4)
    oov = [None if i % 7 == 0 else float(v) for i, v in enumerate(rng.uniform(0, 0.2, 300))]
    nn = [
        None if i % 5 == 0 else float(v)
        for i, v in enumerate(rng.choice([0.0, 0.3, 1.0, 0.55], 300))
    ]
    facts = [
        StoryFacts(t, "Run", "dog", None, ["Dialogue", "Twist"][: i % 3], oov[i], nn[i])
        for i, t in enumerate(texts)
    ]
    batch = Sketch().add_stories(facts)
    given = Sketch().add_stories(facts, [normalize_text(t).split() for t in texts])
    assert np.array_equal(given.hll, batch.hll) and given.terms == batch.terms
    given.hll = batch.hll
    assert given == batch  # every other field

    def bucket(value: float, edges: tuple) -> int:
        return max(bisect.bisect_right(edges, value) - 1, 0)

    lengths = [len(normalize_text(t).split()) for t in texts]
    for hist, values, edges in (
        (batch.length_hist, lengths, LENGTH_EDGES),
        (batch.vocab_hist, oov, OOV_EDGES),
        (batch.nn_hist, nn, NN_EDGES),
    ):
        want = [0] * len(edges)
        for v in values:
            if v is not None:
                want[bucket(v, edges)] += 1
        assert hist == want
    assert batch.nn_hist[-1] == nn.count(1.0) and batch.features[""] == 100
    assert batch.terms["verb", "run"] == 300 and ("adjective", None) not in batch.terms
