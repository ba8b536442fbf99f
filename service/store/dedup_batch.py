"""Near-duplicate verdicts of one batch against the cluster roots its band keys matched.

Pure numpy, no SQL: store.dedup fetches the matches and writes the verdicts. The rule is
minhash.resolve_cluster's, applied to a whole batch at once: a story's candidates are the
stored roots sharing a band key with it and the earlier stories of the batch that share one
and became roots themselves; its cluster is the smallest candidate id whose estimated Jaccard
passes the threshold, its nearest neighbour the largest estimate among the candidates (0.0
without any). Only stories that share a key with an earlier story of their batch are resolved
one by one, in id order, because whether that story is a root decides it.

Stored candidates are screened on one byte per slot (:func:`sketch`) before their full 32-bit
signatures are compared: equal slots stay equal in the low byte, so a pair's count of equal
bytes bounds its count of equal slots from above. Only pairs whose bound reaches the threshold,
or could beat the story's best exact estimate so far, are compared in full (:class:`Screen`).
On formulaic text a story meets ~50 stored roots per million stored, nearly all far below
the threshold: the screen reads a quarter of the bytes, and the verdicts and nearest Jaccards
are exactly those of comparing every pair in full.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_NO_CLUSTER = np.iinfo(np.int64).max
_PAIRS_PER_BLOCK = 32_768  # (pairs x num_perm) comparisons per block: ~4 MB
_MARGIN = 2  # first round: pairs within this many bytes of their story's best bound


@dataclass(frozen=True)
class BatchVerdicts:
    """Per story of the batch (in the order given): cluster id or None, nearest Jaccard."""

    clusters: list[int | None]
    nearest: list[float]

    @property
    def roots(self) -> np.ndarray:
        """Indexes of the stories that start a cluster of their own."""
        return np.flatnonzero([c is None for c in self.clusters])


def sketch(signatures: np.ndarray) -> np.ndarray:
    """The low byte of every slot: the screen's copy of a signature, a quarter of its size."""
    return np.asarray(signatures, dtype=np.uint32).astype(np.uint8)


def _equal_counts(a: np.ndarray, ia: np.ndarray, b: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Equal slots of the pairs (a[ia[k]], b[ib[k]]), in blocks."""
    out = np.empty(len(ia), dtype=np.int64)
    for lo in range(0, len(ia), _PAIRS_PER_BLOCK):
        hi = lo + _PAIRS_PER_BLOCK
        out[lo:hi] = np.count_nonzero(a[ia[lo:hi]] == b[ib[lo:hi]], axis=1)
    return out


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique of int64 values by a plain sort: np.unique hashes them first, ~20x slower on a
    batch's 84,000 band keys."""
    out = np.sort(values, axis=None)
    return out[np.r_[True, out[1:] != out[:-1]]] if len(out) else out


def _expand(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ranges starts[k] .. starts[k] + counts[k] - 1."""
    total = int(counts.sum())
    offsets = np.cumsum(counts) - counts
    return np.repeat(starts - offsets, counts) + np.arange(total, dtype=np.int64)


def _sorted_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The batch's band keys sorted, and the story (row) of each; equal keys in story order."""
    flat = keys.ravel()
    owner = np.repeat(np.arange(keys.shape[0], dtype=np.int64), keys.shape[1])
    order = np.argsort(flat, kind="stable")
    return flat[order], owner[order]


def _group_max(groups: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, -1, dtype=np.int64)
    np.maximum.at(out, groups, values)
    return out


class Screen:
    """The stored candidates of a batch, screened on their sketches, then compared in full.

    `wanted()` names the roots whose full signatures the next round needs; `supply()` gives
    them (a root left out is no candidate: its signature is gone); when `wanted()` is empty,
    `result()` holds every story's cluster among the stored roots and its nearest estimate, and
    `verdicts()` the batch's verdicts."""

    def __init__(
        self,
        signatures: np.ndarray,
        keys: np.ndarray,
        match_keys: np.ndarray,
        match_roots: np.ndarray,
        root_ids: np.ndarray,
        root_sketches: np.ndarray,
        threshold: float,
    ) -> None:
        n, self.num_perm = signatures.shape
        self.n, self.root_ids = n, np.asarray(root_ids, dtype=np.int64)
        self.signatures, self.threshold = signatures, threshold
        # The fewest equal slots that pass, by the same float comparison as the full rule.
        self.passing = next(e for e in range(self.num_perm + 2) if e / self.num_perm >= threshold)
        self._sorted = sorted_keys, sorted_owner = _sorted_keys(keys)
        if len(match_keys):
            lo = np.searchsorted(sorted_keys, match_keys, side="left")
            counts = np.searchsorted(sorted_keys, match_keys, side="right") - lo
            story = sorted_owner[_expand(lo, counts)]
            root = np.repeat(np.asarray(match_roots, dtype=np.int64), counts)
            pair = sorted_unique(story * len(root_ids) + root)  # once per (story, root)
            self.story, self.root = pair // len(root_ids), pair % len(root_ids)
        else:
            self.story = self.root = np.empty(0, dtype=np.int64)
        self.bound = _equal_counts(sketch(signatures), self.story, root_sketches, self.root)
        self.exact = np.full(len(self.story), -1, dtype=np.int64)  # -1 not compared, -2 gone
        best = _group_max(self.story, self.bound, n)[self.story]
        self._need = (self.bound >= self.passing) | (self.bound >= best - _MARGIN)

    def wanted(self) -> np.ndarray:
        """Sorted indexes (into root_ids) of the roots the next round compares; empty: done."""
        return sorted_unique(self.root[self._need])

    def supply(self, roots: np.ndarray, full: np.ndarray) -> None:
        """Full signatures of `roots` (sorted indexes from wanted(), those still stored)."""
        need = np.flatnonzero(self._need)
        at = np.minimum(np.searchsorted(roots, self.root[need]), max(len(roots) - 1, 0))
        have = (roots[at] == self.root[need]) if len(roots) else np.zeros(len(need), dtype=bool)
        self.exact[need[~have]] = -2
        need, at = need[have], at[have]
        self.exact[need] = _equal_counts(self.signatures, self.story[need], full, at)
        # Next round: a pair not compared yet whose bound exceeds its story's best exact count
        # might be the nearest; every pair whose bound reaches the threshold is compared now.
        best = _group_max(self.story, self.exact, self.n)[self.story]
        self._need = (self.exact == -1) & (self.bound > best)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Per story: the smallest passing root id (_NO_CLUSTER without), the nearest estimate."""
        cluster = np.full(self.n, _NO_CLUSTER, dtype=np.int64)
        nearest = np.zeros(self.n, dtype=np.float64)
        done = self.exact >= 0
        estimate = self.exact[done] / self.num_perm
        np.maximum.at(nearest, self.story[done], estimate)
        passing = done & (self.exact >= self.passing)
        np.minimum.at(cluster, self.story[passing], self.root_ids[self.root[passing]])
        return cluster, nearest

    def verdicts(self, story_ids: np.ndarray) -> BatchVerdicts:
        """The batch's verdicts (`story_ids` ascending, in the signatures' order), once
        `wanted()` is empty: the stored roots' result, then the batch's own roots."""
        cluster, nearest = self.result()
        return _within_batch(
            story_ids, self.signatures, *self._sorted, cluster, nearest, self.threshold
        )


def resolve_batch(
    story_ids: np.ndarray,
    signatures: np.ndarray,
    keys: np.ndarray,
    match_keys: np.ndarray,
    match_roots: np.ndarray,
    root_ids: np.ndarray,
    root_signatures: np.ndarray,
    threshold: float,
) -> BatchVerdicts:
    """Verdicts of a batch: `story_ids` ascending, their (n, num_perm) `signatures` and (n, bands)
    band `keys`; the stored matches as pairs (match_keys[k], root index match_roots[k]) into
    `root_ids` and their `root_signatures` (all in memory)."""
    screen = Screen(
        signatures, keys, match_keys, match_roots, root_ids, sketch(root_signatures), threshold
    )
    while len(roots := screen.wanted()):
        screen.supply(roots, root_signatures[roots])
    return screen.verdicts(story_ids)


def _within_batch(
    story_ids: np.ndarray,
    signatures: np.ndarray,
    sorted_keys: np.ndarray,
    sorted_owner: np.ndarray,
    cluster: np.ndarray,
    nearest: np.ndarray,
    threshold: float,
) -> BatchVerdicts:
    """The verdicts, given each story's verdict against the stored roots (Screen.result()) and
    the batch's sorted keys: stories sharing a key with an earlier story of the batch are
    resolved in id order."""
    n = len(story_ids)
    bounds = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1], True])
    shared = np.flatnonzero(np.diff(bounds) > 1)
    if len(shared):
        earlier_list, later_list = [], []
        for g in shared.tolist():
            members = sorted_owner[bounds[g] : bounds[g + 1]]
            a, b = np.triu_indices(len(members), k=1)
            earlier_list.append(members[a])
            later_list.append(members[b])
        earlier, later = np.concatenate(earlier_list), np.concatenate(later_list)
        keep = earlier < later
        pair = sorted_unique(earlier[keep] * n + later[keep])
        earlier, later = pair // n, pair % n
        estimate = _equal_counts(signatures, earlier, signatures, later) / signatures.shape[1]
        by_later = np.argsort(later, kind="stable")
        earlier, later, estimate = earlier[by_later], later[by_later], estimate[by_later]
        ids = story_ids.tolist()
        cl, nn = cluster.tolist(), nearest.tolist()
        for a, b, j in zip(earlier.tolist(), later.tolist(), estimate.tolist(), strict=True):
            if cl[a] != _NO_CLUSTER:
                continue  # not a root: never a candidate
            if j > nn[b]:
                nn[b] = j
            if j >= threshold and ids[a] < cl[b]:
                cl[b] = ids[a]
        cluster, nearest = np.asarray(cl, dtype=np.int64), np.asarray(nn)

    return BatchVerdicts(
        clusters=[None if c == _NO_CLUSTER else c for c in cluster.tolist()],
        nearest=nearest.tolist(),
    )
