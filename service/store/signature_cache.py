"""Cluster roots' MinHash signatures kept in one process across its dedup batches.

A story's signature is a function of its text and the MinHash parameters, both fixed for a
story id, so an entry never goes stale: a rebuilt index makes other stories roots, it does not
change anyone's signature. The band lookup then fetches from Postgres only the signatures of
candidate roots this process has not met yet (store.dedup_near). Entries are kept until the cap
is reached, never evicted: the roots a formulaic text matches are spread over the whole store,
so the oldest are as likely to come back as the newest. (The service deletes no story; a root
deleted by hand while an import runs stays a candidate for that import if it is cached.)
"""

from __future__ import annotations

import numpy as np

DEFAULT_MAX_BYTES = 1 << 30  # 2M signatures of 128 x 32 bits: a 2M-story import stays cached


class SignatureCache:
    """Signatures by story id, numpy only: ids sorted apart from the signature rows."""

    def __init__(self, num_perm: int, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        self.num_perm = num_perm
        self.capacity = max_bytes // (4 * num_perm)
        self._ids = np.empty(0, dtype=np.int64)  # sorted
        self._rows = np.empty(0, dtype=np.int64)  # row of _sigs for each of _ids
        self._sigs = np.empty((0, num_perm), dtype=np.uint32)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return int(self._sigs.nbytes + self._ids.nbytes + self._rows.nbytes)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id in :meth:`signatures`' order, -1 where it is not cached."""
        ids = np.asarray(ids, dtype=np.int64)
        if not self._count or not len(ids):
            return np.full(len(ids), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(self._ids, ids), self._count - 1)
        return np.where(self._ids[at] == ids, self._rows[at], -1)

    def signatures(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), num_perm) signatures of rows given by :meth:`rows_of` (all >= 0)."""
        return self._sigs[rows]

    def add(self, ids: np.ndarray, signatures: np.ndarray) -> None:
        """Keep these signatures (ids not cached yet, distinct), as many as the cap allows."""
        room = self.capacity - self._count
        n = min(room, len(ids))
        if n <= 0:
            return
        ids = np.asarray(ids[:n], dtype=np.int64)
        if self._count + n > len(self._sigs):  # grow geometrically, up to the cap
            size = min(self.capacity, max(self._count + n, 2 * len(self._sigs), 1024))
            grown = np.empty((size, self.num_perm), dtype=np.uint32)
            grown[: self._count] = self._sigs[: self._count]
            self._sigs = grown
        self._sigs[self._count : self._count + n] = signatures[:n]
        new_rows = np.arange(self._count, self._count + n, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        at = np.searchsorted(self._ids, ids[order])
        self._ids = np.insert(self._ids, at, ids[order])
        self._rows = np.insert(self._rows, at, new_rows[order])
        self._count += n
