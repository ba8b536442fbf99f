"""The near-duplicate lookup of a batch against the band index, and the writes of new roots.

Its fixed cost stays the same at any store size (the candidates it must verify do grow with the
store, see docs/scale.md): a batch's band keys (42 per story) are probed once each,
sorted and deduplicated, in one index-only scan of the (band_hash, story_id) btree that returns
the matching pairs as two binary bigint[] (no heap visit for rows the visibility map covers, no
Python object per row); the candidates are screened on the roots' sketches, from the caller's
:class:`SignatureCache` when it has them, from `story_signatures` otherwise, and only the few
that pass the screen are compared on their full signatures (store.dedup_batch.Screen).
"""

from __future__ import annotations

import logging
import time

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.dataset.minhash import MinHashParams, band_keys_batch
from service.store.dedup_batch import BatchVerdicts, Screen, sketch, sorted_unique
from service.store.imports import (
    Int8Array,
    copy_int8_pairs,
    driver_connection,
    load_int8_arrays_as_numpy,
    register_int8_array,
)
from service.store.signature_cache import SignatureCache

logger = logging.getLogger(__name__)

# `= ANY` over sorted keys walks the btree once, in key order (PostgreSQL 17+); both aggregates
# see the rows in the same order, so the two arrays pair up.
_BAND_PAIRS = (
    "SELECT array_agg(band_hash), array_agg(story_id) FROM story_bands "
    "WHERE band_hash = ANY(%s::bigint[])"
)
_SIGNATURES = (
    "SELECT array_agg(story_id), string_agg(minhash, ''::bytea) FROM story_signatures "
    "WHERE story_id = ANY(%s::bigint[])"
)
# An index-only scan reads no heap page for rows that are all-visible; a bitmap scan would
# visit the heap for every match, and a sequential scan the whole table. The plan is then the
# same for every batch: prepared once per connection, it skips estimating 84,000 array
# elements per batch (~20 ms of planning).
_SETTINGS = "('enable_bitmapscan', 'enable_seqscan', 'plan_cache_mode')"
_INDEX_ONLY = (
    "SELECT set_config(name, CASE name WHEN 'plan_cache_mode' THEN 'force_generic_plan' "
    f"ELSE 'off' END, true) FROM pg_settings WHERE name IN {_SETTINGS}"
)
_PLANNER_DEFAULTS = (
    f"SELECT set_config(name, reset_val, true) FROM pg_settings WHERE name IN {_SETTINGS}"
)


def is_empty_signature_batch(sigs: np.ndarray) -> np.ndarray:
    """Per row: minhash.is_empty_signature (no shingle at all: every slot at its maximum)."""
    return (sigs == np.iinfo(np.uint32).max).all(axis=1)


async def near_verdicts(
    session: AsyncSession,
    story_ids: np.ndarray,
    sigs: np.ndarray,
    params: MinHashParams,
    cache: SignatureCache | None = None,
) -> BatchVerdicts:
    """Verdicts of stories `story_ids` (ascending, none stored in the index yet) with their
    (n, num_perm) signatures, against the stored cluster roots sharing a band key with them."""
    keys = band_keys_batch(sigs, params.bands, params.rows)
    t0 = time.perf_counter()
    await register_int8_array(session)
    raw = await driver_connection(session)
    async with raw.cursor(binary=True) as cur:
        await cur.execute(_INDEX_ONLY)
        load_int8_arrays_as_numpy(cur)
        await cur.execute(_BAND_PAIRS, (Int8Array(sorted_unique(keys)),), prepare=True)
        match_keys, match_ids = await cur.fetchone()
        await cur.execute(_PLANNER_DEFAULTS)
    t1 = time.perf_counter()
    if match_keys is None:  # no row matched: array_agg of nothing is NULL
        match_keys = match_ids = np.empty(0, dtype=np.int64)
    roots = await _Roots.load(session, sorted_unique(match_ids), params.num_perm, cache)
    if roots.missing is not None:  # roots without a signature are no candidates (as a JOIN)
        keep = np.isin(match_ids, roots.missing, invert=True)
        match_keys, match_ids = match_keys[keep], match_ids[keep]
    t2 = time.perf_counter()
    screen = Screen(
        sigs,
        keys,
        match_keys,
        np.searchsorted(roots.ids, match_ids),
        roots.ids,
        roots.sketches,
        params.threshold,
    )
    compared = 0
    while len(wanted := screen.wanted()):
        have, full = await roots.full(session, wanted)
        screen.supply(have, full)
        compared += len(wanted)
    verdicts = screen.verdicts(story_ids)
    logger.debug(
        "band lookup stories=%d pairs=%d roots=%d fetched=%d compared=%d pairs_ms=%.1f "
        "sigs_ms=%.1f resolve_ms=%.1f",
        len(story_ids),
        len(match_keys),
        len(roots.ids),
        roots.fetched,
        compared,
        1000 * (t1 - t0),
        1000 * (t2 - t1),
        1000 * (time.perf_counter() - t2),
    )
    return verdicts


class _Roots:
    """A batch's candidate roots (ascending ids): every one's sketch, and where its full
    signature is (the cache, this batch's fetch, or Postgres again)."""

    def __init__(self, ids: np.ndarray, sketches: np.ndarray, cache: SignatureCache | None):
        self.ids, self.sketches, self.cache = ids, sketches, cache
        self.missing: np.ndarray | None = None  # ids with no stored signature
        self.fetched = 0  # signatures read from Postgres
        self._local_ids = np.empty(0, dtype=np.int64)  # fetched by this batch, ascending
        self._local = np.empty((0, sketches.shape[1]), dtype=np.uint32)

    @classmethod
    async def load(
        cls,
        session: AsyncSession,
        root_ids: np.ndarray,
        num_perm: int,
        cache: SignatureCache | None,
    ) -> _Roots:
        sketches = np.empty((len(root_ids), num_perm), dtype=np.uint8)
        rows = cache.rows_of(root_ids) if cache is not None else np.full(len(root_ids), -1)
        hit = rows >= 0
        if hit.any():
            sketches[hit] = cache.sketches(rows[hit])  # type: ignore[union-attr]
        out = cls(root_ids, sketches, cache)
        wanted = root_ids[~hit]
        if not len(wanted):
            return out
        ids, got = await _fetch(session, wanted, num_perm)
        out.fetched = len(ids)
        out._local_ids, out._local = ids, got
        sketches[np.flatnonzero(~hit)[np.isin(wanted, ids)]] = sketch(got)  # both ascending
        if cache is not None:
            cache.add(ids, got)
        missing = np.setdiff1d(wanted, ids, assume_unique=True)
        if len(missing):
            kept = np.isin(root_ids, missing, invert=True)
            out.ids, out.sketches, out.missing = root_ids[kept], sketches[kept], missing
        return out

    async def full(
        self, session: AsyncSession, wanted: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The full signatures of roots `wanted` (sorted indexes into ids): (indexes that have
        one, their signatures)."""
        ids = self.ids[wanted]
        out = np.empty((len(ids), self.sketches.shape[1]), dtype=np.uint32)
        found = np.zeros(len(ids), dtype=bool)
        if len(self._local_ids):
            at = np.minimum(np.searchsorted(self._local_ids, ids), len(self._local_ids) - 1)
            found = self._local_ids[at] == ids
            out[found] = self._local[at[found]]
        if self.cache is not None and self.cache.full and not found.all():
            rows = self.cache.rows_of(ids)
            cached = ~found & (rows >= 0)
            out[cached] = self.cache.signatures(rows[cached])
            found |= cached
        if not found.all():  # a sketch-only cache: the few compared in full, from Postgres
            more, got = await _fetch(session, ids[~found], self.sketches.shape[1])
            self.fetched += len(more)
            rest = np.flatnonzero(~found)
            pos = rest[np.isin(ids[rest], more)]  # both ascending
            out[pos] = got
            found[pos] = True
        return wanted[found], out[found]


async def _fetch(
    session: AsyncSession, ids: np.ndarray, num_perm: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stored signatures of `ids`: (the ids that have one, ascending; their signatures)."""
    raw = await driver_connection(session)
    async with raw.cursor(binary=True) as cur:
        load_int8_arrays_as_numpy(cur)
        await cur.execute(_SIGNATURES, (Int8Array(ids),))
        got_ids, blob = await cur.fetchone()
    if got_ids is None:
        return np.empty(0, dtype=np.int64), np.empty((0, num_perm), dtype=np.uint32)
    got = np.frombuffer(blob, dtype="<u4").reshape(len(got_ids), num_perm).astype(np.uint32)
    order = np.argsort(got_ids)
    return got_ids[order], got[order]


async def add_roots(
    session: AsyncSession,
    ids: np.ndarray,
    sigs: np.ndarray,
    params: MinHashParams,
    cache: SignatureCache | None = None,
) -> None:
    """Band keys and signatures of new cluster roots (stories stored already)."""
    t0 = time.perf_counter()
    sigs = np.ascontiguousarray(sigs, dtype="<u4")
    keys = band_keys_batch(sigs, params.bands, params.rows).ravel()
    owners = np.repeat(ids, params.bands)
    # In key order: consecutive inserts land on neighbouring btree pages.
    order = np.argsort(keys)
    # One binary COPY built by numpy: the batch's ~84,000 band rows with no Python loop.
    await copy_int8_pairs(session, "story_bands (band_hash, story_id)", keys[order], owners[order])
    # The signatures as one bytea, cut on the server: no per-row adaptation in Python.
    await register_int8_array(session)
    await session.execute(
        text(
            """
            INSERT INTO story_signatures (story_id, minhash)
            SELECT u.id, substring(CAST(:sigs AS bytea) FROM CAST((u.n - 1) * :width + 1 AS int)
                                   FOR CAST(:width AS int))
            FROM unnest(CAST(:ids AS bigint[])) WITH ORDINALITY AS u(id, n)
            ON CONFLICT (story_id) DO UPDATE SET minhash = EXCLUDED.minhash
            """
        ),
        {"ids": Int8Array(ids), "sigs": sigs.tobytes(), "width": sigs.shape[1] * 4},
    )
    if cache is not None:
        cached = cache.rows_of(ids) >= 0
        cache.add(ids[~cached], sigs[~cached])
    logger.debug("roots added roots=%d ms=%.1f", len(ids), 1000 * (time.perf_counter() - t0))
