"""Cluster roots' MinHash signatures kept in one process across its dedup batches.

A story's signature is a function of its text and the MinHash parameters, both fixed for a
story id, so an entry never goes stale: a rebuilt index makes other stories roots, it does not
change anyone's signature. The band lookup then fetches from Postgres only the signatures of
candidate roots this process has not met yet (store.dedup_near). Every entry keeps the root's
sketch (one byte per slot, what the lookup screens candidates on); a cache made with
`full=True` (an import's) keeps the whole signature as well, one made without (a worker's
indexer, whose memory is shared with generation) fetches the few full signatures a batch
compares from Postgres. Entries are kept until the cap is reached, never evicted: the roots a
formulaic text matches are spread over the whole store, so the oldest are as likely to come
back as the newest. (The service deletes no story; a root deleted by hand while a process
runs stays a candidate for that process if it is cached.)
"""

from __future__ import annotations

import numpy as np

from service.store.dedup_batch import sketch

# 2.1M roots with full signatures (640 bytes each at 128 slots): a 2M-story import stays cached.
DEFAULT_MAX_BYTES = 1_344 << 20
SKETCH_ONLY_MAX_BYTES = 256 << 20  # 2M roots' sketches (128 bytes each)


class SignatureCache:
    """Sketches (and full signatures) by story id, numpy only: ids sorted apart from the rows."""

    def __init__(self, num_perm: int, *, max_bytes: int = DEFAULT_MAX_BYTES, full: bool = True):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        self.num_perm = num_perm
        self.full = full
        self.capacity = max_bytes // (num_perm * (5 if full else 1))
        self._ids = np.empty(0, dtype=np.int64)  # sorted
        self._rows = np.empty(0, dtype=np.int64)  # row of _sketches for each of _ids
        self._sketches = np.empty((0, num_perm), dtype=np.uint8)
        self._sigs = np.empty((0, num_perm), dtype=np.uint32)  # rows as _sketches; full only
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return int(self._sketches.nbytes + self._sigs.nbytes + self._ids.nbytes + self._rows.nbytes)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id in :meth:`sketches`' order, -1 where it is not cached."""
        ids = np.asarray(ids, dtype=np.int64)
        if not self._count or not len(ids):
            return np.full(len(ids), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._ids, ids), self._count - 1)
        return np.where(self._ids[at] == ids, self._rows[at], -1)

    def sketches(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), num_perm) sketches of rows given by :meth:`rows_of` (all >= 0)."""
        return self._sketches[rows]

    def signatures(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), num_perm) full signatures of rows (all >= 0); a `full` cache only."""
        if not self.full:
            raise ValueError("this cache keeps sketches only")
        return self._sigs[rows]

    def add(self, ids: np.ndarray, signatures: np.ndarray) -> None:
        """Keep these signatures (ids not cached yet, distinct), as many as the cap allows."""
        room = self.capacity - self._count
        n = min(room, len(ids))
        if n <= 0:
            return
        ids = np.asarray(ids[:n], dtype=np.int64)
        if self._count + n > len(self._sketches):  # grow geometrically, up to the cap
            size = min(self.capacity, max(self._count + n, 2 * len(self._sketches), 1024))
            self._sketches = _grown(self._sketches, size, self._count)
            if self.full:
                self._sigs = _grown(self._sigs, size, self._count)
        self._sketches[self._count : self._count + n] = sketch(signatures[:n])
        if self.full:
            self._sigs[self._count : self._count + n] = signatures[:n]
        new_rows = np.arange(self._count, self._count + n, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        at = np.searchsorted(self._ids, ids[order])
        self._ids = np.insert(self._ids, at, ids[order])
        self._rows = np.insert(self._rows, at, new_rows[order])
        self._count += n


def _grown(rows: np.ndarray, size: int, used: int) -> np.ndarray:
    out = np.empty((size, rows.shape[1]), dtype=rows.dtype)
    out[:used] = rows[:used]
    return out
