"""The batch resolver gives, story for story, the verdicts of the one-by-one rule."""

from __future__ import annotations

import numpy as np
import pytest

from service.dataset.minhash import (
    Candidate,
    MinHashParams,
    band_keys_batch,
    jaccard_estimate,
    resolve_cluster,
)
from service.store.dedup_batch import Screen, resolve_batch

PARAMS = MinHashParams()


def one_by_one(ids, sigs, keys, stored: dict[int, np.ndarray]):
    """The rule story by story: candidates are stored roots and earlier roots of the batch
    that share a band key; the nearest estimate is over all of them."""
    buckets: dict[int, list[int]] = {}
    known = dict(stored)
    for sid, sig in stored.items():
        for k in band_keys_batch(sig, PARAMS.bands, PARAMS.rows)[0].tolist():
            buckets.setdefault(k, []).append(sid)
    clusters, nearest = [], []
    for sid, sig, row in zip(ids.tolist(), sigs, keys.tolist(), strict=True):
        cands = {o for k in row for o in buckets.get(k, ())}
        cl = resolve_cluster(sig, [Candidate(o, known[o], None) for o in cands], PARAMS.threshold)
        clusters.append(cl)
        nearest.append(max((jaccard_estimate(sig, known[o]) for o in cands), default=0.0))
        if cl is None:
            known[sid] = sig
            for k in row:
                buckets.setdefault(k, []).append(sid)
    return clusters, nearest


def family(rng: np.random.Generator, base: np.ndarray, n: int, keep: float) -> np.ndarray:
    """`n` signatures keeping each slot of `base` with probability `keep` (Jaccard ~ keep)."""
    fresh = rng.integers(0, 2**32, size=(n, base.size), dtype=np.uint32)
    return np.where(rng.random((n, base.size)) < keep, base, fresh).astype(np.uint32)


@pytest.mark.parametrize("seed", range(6))
def test_batch_verdicts_equal_the_one_by_one_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    bases = rng.integers(0, 2**32, size=(18, PARAMS.num_perm), dtype=np.uint32)
    # Families around each base, Jaccard from 0.1 to 0.9: plenty of shared bands on both sides
    # of the threshold and chains of members; the first 12 families are stored in part, the
    # last 6 arrive in the batch only (duplicates inside the batch).
    fams = [family(rng, b, 25, rng.uniform(0.1, 0.9)) for b in bases]
    sigs = np.concatenate(fams[:12])
    sigs = sigs[rng.permutation(len(sigs))]
    stored_n = 100
    stored_ids = np.arange(1, stored_n + 1, dtype=np.int64)
    stored_keys = band_keys_batch(sigs[:stored_n], PARAMS.bands, PARAMS.rows)
    stored_clusters, _ = one_by_one(stored_ids, sigs[:stored_n], stored_keys, {})
    stored = {
        int(i): sigs[k]
        for k, (i, c) in enumerate(zip(stored_ids, stored_clusters, strict=True))
        if c is None
    }
    batch = np.concatenate([sigs[stored_n:], *fams[12:]])
    batch = batch[rng.permutation(len(batch))]
    ids = np.arange(1_000, 1_000 + len(batch), dtype=np.int64)
    keys = band_keys_batch(batch, PARAMS.bands, PARAMS.rows)
    want_clusters, want_nearest = one_by_one(ids, batch, keys, stored)

    # What the band table returns: (key, root) for every stored root key that the batch has.
    batch_keys = set(keys.ravel().tolist())
    root_ids = np.array(sorted(stored), dtype=np.int64)
    root_sigs = np.stack([stored[i] for i in root_ids.tolist()])
    pairs = [
        (k, r)
        for r, sig in enumerate(root_sigs)
        for k in band_keys_batch(sig, PARAMS.bands, PARAMS.rows)[0].tolist()
        if k in batch_keys
    ]
    match_keys = np.array([k for k, _ in pairs], dtype=np.int64)
    match_roots = np.array([r for _, r in pairs], dtype=np.int64)
    got = resolve_batch(
        ids, batch, keys, match_keys, match_roots, root_ids, root_sigs, PARAMS.threshold
    )
    assert got.clusters == want_clusters
    assert got.nearest == want_nearest
    dup_in_batch = sum(c is not None and c >= 1_000 for c in want_clusters)
    dup_of_stored = sum(c is not None and c < 1_000 for c in want_clusters)
    assert dup_in_batch > 5 and dup_of_stored > 5  # both paths were exercised
    assert got.roots.tolist() == [i for i, c in enumerate(want_clusters) if c is None]


def test_no_matches_and_no_shared_keys() -> None:
    rng = np.random.default_rng(9)
    batch = rng.integers(0, 2**32, size=(4, PARAMS.num_perm), dtype=np.uint32)
    keys = band_keys_batch(batch, PARAMS.bands, PARAMS.rows)
    empty = np.zeros(0, dtype=np.int64)
    got = resolve_batch(
        np.arange(4, dtype=np.int64), batch, keys, empty, empty, empty,
        np.zeros((0, PARAMS.num_perm), dtype=np.uint32), PARAMS.threshold,
    )  # fmt: skip
    assert got.clusters == [None] * 4 and got.nearest == [0.0] * 4


def test_screen_compares_in_full_until_no_bound_can_beat_the_best() -> None:
    """Roots whose low bytes match far more slots than their values: the first round compares
    the best bound (a decoy), a second round the others; a root whose full signature is gone
    is no candidate. Exactly the nearest and cluster of comparing every pair in full."""
    rng = np.random.default_rng(3)
    n = PARAMS.num_perm
    story = rng.integers(0, 2**32, size=(1, n), dtype=np.uint32)

    def root(equal: int, low_byte_only: int) -> np.ndarray:
        r = story[0] ^ np.uint32(1 << 20)  # every slot differs, low bytes equal
        r[low_byte_only + equal :] ^= np.uint32(0xFF)  # ... in the first slots only
        r[:equal] = story[0, :equal]
        return r

    # (equal slots, slots equal in the low byte only): bounds 60, 45, 44, 43, 20.
    roots = np.stack([root(5, 55), root(41, 4), root(44, 0), root(43, 0), root(20, 0)])
    root_ids = np.array([10, 20, 30, 40, 50], dtype=np.int64)
    keys = band_keys_batch(story, PARAMS.bands, PARAMS.rows)
    match_keys = np.full(5, keys[0, 0], dtype=np.int64)  # all five share the story's first key
    screen = Screen(story, keys, match_keys, np.arange(5), root_ids, roots.astype(np.uint8), 0.3)
    assert screen.bound.tolist() == [60, 45, 44, 43, 20]
    assert screen.wanted().tolist() == [0, 1, 2, 3]  # bounds >= the 39 that pass
    screen.supply(np.array([0, 1, 3]), roots[[0, 1, 3]])  # root 30's signature is gone
    assert screen.wanted().tolist() == []  # no bound left above the best exact count (43)
    cluster, nearest = screen.result()
    assert cluster.tolist() == [20] and nearest.tolist() == [43 / n]

    low = Screen(story, keys, match_keys, np.arange(5), root_ids, roots.astype(np.uint8), 0.5)
    assert low.wanted().tolist() == [0]  # none can pass 0.5: only the best bound, first
    low.supply(np.array([0]), roots[[0]])  # exact 5: every bound above 5 may be the nearest
    assert low.wanted().tolist() == [1, 2, 3, 4]
    low.supply(np.array([1, 2, 3, 4]), roots[[1, 2, 3, 4]])
    assert low.wanted().tolist() == []
    cluster, nearest = low.result()
    assert cluster.tolist() == [np.iinfo(np.int64).max] and nearest.tolist() == [44 / n]
