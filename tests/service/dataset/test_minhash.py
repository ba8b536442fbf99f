"""MinHash signatures, band hashes and the near-duplicate index on real TinyStories text."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from datasketch import MinHash

from service.dataset.minhash import (
    Candidate,
    InMemoryNearDupIndex,
    MinHasher,
    MinHashParams,
    band_keys,
    band_keys_batch,
    jaccard_estimate,
    normalize_text,
    resolve_cluster,
    shingles,
    signature_from_bytes,
    signature_to_bytes,
    text_hash,
)

DATA = Path(__file__).parents[1] / "data"


@pytest.fixture(scope="module")
def real() -> list[str]:
    text = (DATA / "TinyStories-train-sample1200.txt").read_text(encoding="utf-8")
    return [s.strip() for s in text.split("<|endoftext|>") if s.strip()]


@pytest.fixture(scope="module")
def hasher() -> MinHasher:
    return MinHasher()


def test_normalisation_and_exact_hash():
    assert normalize_text("  Lily’s DOG ran,\n\tfast!! ") == "lilys dog ran fast"
    assert normalize_text("ｆｕｌｌ width") == "full width"  # NFKC
    assert text_hash("Once upon a time...") == text_hash("once  upon a TIME")
    assert text_hash("Once upon a time") != text_hash("Once upon a tim")
    assert len(text_hash("x")) == 64


def test_shingles_are_word_5grams():
    assert shingles("A b c d e f") == ["a b c d e", "b c d e f"]
    assert shingles("Hi there") == ["hi there"]
    assert shingles("...") == []


def test_signatures_equal_datasketch(real, hasher):
    sigs = hasher.signatures(real[:20])
    for i in (0, 7, 19):
        hashes = hasher.shingle_hashes(real[i])
        assert len(hashes) == len(shingles(real[i]))
        ref = MinHash(num_perm=128, seed=1, hashfunc=lambda x: x)
        ref.update_batch([int(h) for h in hashes])
        np.testing.assert_array_equal(ref.hashvalues, sigs[i])
    # batch and one-by-one agree; order in the batch does not matter
    np.testing.assert_array_equal(hasher.signature(real[3]), sigs[3])
    np.testing.assert_array_equal(hasher.signatures(real[:20][::-1])[::-1], sigs)


def test_empty_and_short_texts(hasher):
    sigs = hasher.signatures(["", "Hi there", "hi, THERE!"])
    assert np.all(sigs[0] == 0xFFFFFFFF)
    np.testing.assert_array_equal(sigs[1], sigs[2])
    assert not np.all(sigs[1] == 0xFFFFFFFF)


def test_jaccard_estimate_tracks_true_jaccard(real, hasher):
    a = real[0]
    words = a.split(" ")
    b = " ".join(words[: int(len(words) * 0.8)])
    sa, sb = set(shingles(a)), set(shingles(b))
    true = len(sa & sb) / len(sa | sb)
    est = jaccard_estimate(hasher.signature(a), hasher.signature(b))
    assert abs(est - true) < 0.12
    assert jaccard_estimate(hasher.signature(real[0]), hasher.signature(real[1])) < 0.2


def test_band_keys_bigint_and_stable(hasher, real):
    sig = hasher.signature(real[0])
    keys = band_keys(sig, 42, 3)
    assert len(keys) == 42
    assert all(-(2**63) <= k < 2**63 for k in keys)
    assert len(set(keys)) == 42
    assert keys == band_keys(sig.copy(), 42, 3)
    batch = band_keys_batch(hasher.signatures(real[:5]), 42, 3)
    assert batch.dtype == np.int64 and batch.shape == (5, 42)
    assert batch[0].tolist() == keys
    # one changed row changes exactly the band it belongs to
    other = sig.copy()
    other[7] ^= 1
    diff = [i for i, (x, y) in enumerate(zip(keys, band_keys(other, 42, 3), strict=True)) if x != y]
    assert diff == [7 // 3]
    with pytest.raises(ValueError):
        band_keys(sig, 50, 3)


def test_signature_bytes_roundtrip(hasher):
    sig = hasher.signature("the cat sat on the mat today")
    data = signature_to_bytes(sig)
    assert len(data) == 128 * 4
    np.testing.assert_array_equal(signature_from_bytes(data), sig)


def test_resolve_cluster_verifies_and_picks_earliest_root():
    base = np.arange(128, dtype=np.uint32)
    near = base.copy()
    near[:20] += 1000  # estimated Jaccard 108/128
    far = base + 5000
    cands = [
        Candidate(9, near, 4),  # member of cluster rooted at 4
        Candidate(3, far, None),  # LSH false positive: fails verification
        Candidate(6, near, None),
    ]
    assert resolve_cluster(base, cands, 0.3) == 4
    assert resolve_cluster(base, cands[1:2], 0.3) is None
    assert resolve_cluster(base, [], 0.3) is None


def _edit(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    for i in rng.sample(range(len(words)), max(1, len(words) // 20)):
        words[i] = "banana"
    return " ".join(words[: int(len(words) * 0.9)])


def test_index_finds_planted_edits_and_no_false_positives(real, hasher):
    rng = random.Random(0)
    stories = real[:300]
    variants = [_edit(s, rng) for s in stories[:100]]
    index = InMemoryNearDupIndex()
    sigs = hasher.signatures(stories + variants)
    clusters = [index.query_and_insert(i, sig) for i, sig in enumerate(sigs)]
    # distinct real stories (formulaic openings and all) are never clustered together
    assert clusters[:300] == [None] * 300
    hits = sum(clusters[300 + k] == k for k in range(100))
    assert hits >= 97
    assert len(index) == 400
    # a variant of a variant joins the original cluster (transitively the root)
    again = hasher.signature(_edit(variants[0], rng))
    assert index.query_and_insert(1000, again) == 0
    with pytest.raises(ValueError):
        index.query_and_insert(1000, again)


def test_params_validation():
    with pytest.raises(ValueError):
        MinHashParams(bands=40, rows=4)
    with pytest.raises(ValueError):
        MinHashParams(threshold=0)
    assert MinHashParams().to_dict()["bands"] * MinHashParams().to_dict()["rows"] <= 128


def test_ascii_fast_path_normalises_as_the_general_rule() -> None:
    """ASCII text takes a one-pass path; it must give what NFKC + the regexes give."""
    import re
    import unicodedata

    from service.dataset.minhash import normalized_words

    def general(text: str) -> str:
        text = re.sub(r"['’‘`´]", "", unicodedata.normalize("NFKC", text).lower())
        return " ".join(re.sub(r"[^\w\s]+|_+", " ", text).split())

    rng = random.Random(3)
    alphabet = [chr(c) for c in range(128)] + list("aaaaeeee  ''__--")
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(40))) for _ in range(5000)]
    texts += ["Tom's dog_run: DON`T\x1fstop!", "x\x00y", "", " \t\n"]
    for t in texts:
        assert t.isascii()
        assert normalize_text(t) == general(t), repr(t)
        assert normalized_words(t) == general(t).split()
    for t in ["Ｆｕｌｌ　wídth ‘Quote’ café_x ´a", "İstanbul ﬁsh"]:  # the general path
        assert normalize_text(t) == general(t)
