"""Dedup orchestration: the indexer of stored stories, the dedup pass (index in store.dedup)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.dataset.minhash import MinHasher, MinHashParams
from service.db import execute_and_commit
from service.store import dedup as dedup_store
from service.store.rollups import RollupBatch, minute_of, rollup_statements
from service.store.signature_cache import SignatureCache

logger = logging.getLogger(__name__)


@dataclass
class DedupSummary:
    """Outcome of a dedup pass or an import batch."""

    checked: int = 0
    unique: int = 0
    near_duplicate: int = 0
    exact_duplicate: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def add(self, outcomes: dict[int, dedup_store.DedupOutcome]) -> None:
        for outcome in outcomes.values():
            self.checked += 1
            setattr(self, outcome.status, getattr(self, outcome.status) + 1)

    @property
    def duplicate_rate(self) -> float:
        return (self.near_duplicate + self.exact_duplicate) / self.checked if self.checked else 0.0


_hashers: dict[MinHashParams, MinHasher] = {}


def hasher_for(params: MinHashParams) -> MinHasher:
    """One MinHasher per parameter set and process (its word cache is worth keeping)."""
    hasher = _hashers.get(params)
    if hasher is None:
        hasher = _hashers[params] = MinHasher(params)
    return hasher


def signatures(
    texts: Sequence[str], params: MinHashParams, *, normalized: bool = False
) -> np.ndarray:
    return hasher_for(params).signatures(texts, normalized=normalized)


async def index_pending(
    sessionmaker: async_sessionmaker[AsyncSession],
    params: MinHashParams,
    *,
    limit: int = 500,
    cache: SignatureCache | None = None,
) -> int:
    """Check the oldest `limit` stored stories that have no dedup status yet, in one transaction.

    Returns how many were checked. Duplicates found among a job's stories are added to its
    rollups. `cache`: root sketches this process keeps across its batches (see
    store.signature_cache).
    """
    return len(await _check_pending(sessionmaker, params, limit=limit, cache=cache))


async def _check_pending(
    sessionmaker: async_sessionmaker[AsyncSession],
    params: MinHashParams,
    *,
    limit: int,
    cache: SignatureCache | None = None,
) -> dict[int, dedup_store.DedupOutcome]:
    """index_pending's work; the outcomes by story id."""
    async with sessionmaker() as session, session.begin():
        # A stalled indexer (paused process, lost host) must not hold the index for long:
        # Postgres ends its session after this much silence mid-transaction. On formulaic
        # text a batch's band matches run to 100,000s of rows: group them in memory.
        await session.execute(
            text(
                "SELECT set_config('idle_in_transaction_session_timeout', '15s', true), "
                "set_config('work_mem', '64MB', true)"
            )
        )
        # Lock first, then choose: a story is never indexed twice by concurrent writers.
        await dedup_store.lock_index(session)
        batch = await dedup_store.pending_stories(session=session, limit=limit)
        if not batch:
            return {}
        texts = [t for _, t, _, _, _ in batch]
        sigs = await asyncio.to_thread(signatures, texts, params)
        items = [  # the hash was stored with the story
            dedup_store.DedupItem(sid, h, sig)
            for (sid, _, h, _, _), sig in zip(batch, sigs, strict=True)
        ]
        outcomes = await dedup_store.index_stories(
            session=session, items=items, params=params, locked=True, cache=cache
        )
        rollups = RollupBatch()
        minute = minute_of(None)
        for sid, _, _, job_id, model in batch:
            outcome = outcomes[sid]
            if job_id is not None and outcome.status != "unique":
                delta = rollups.delta(minute=minute, model=model or "", job_id=job_id)
                delta.duplicates += 1
                delta.exact_duplicates += outcome.status == "exact_duplicate"
        if rollups.rows:  # the rows finishing workers write too: held for one round trip
            await execute_and_commit(session, rollup_statements(rollups))
    return outcomes


async def run_dedup_pass(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    params: MinHashParams | None = None,
    batch_size: int = 2_000,
    rebuild: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> DedupSummary:
    """Index every accepted story without a dedup status, in id order, batch by batch."""
    params = params or MinHashParams()
    if rebuild:
        async with sessionmaker() as session, session.begin():
            await dedup_store.reset_index(session=session, params=params)
    async with sessionmaker() as session:
        total = await dedup_store.count_undeduped(session=session)
    summary = DedupSummary()
    while outcomes := await _check_pending(sessionmaker, params, limit=batch_size):
        summary.add(outcomes)
        if on_progress:
            on_progress(summary.checked, total)
    logger.info(
        "dedup pass checked=%d unique=%d near=%d exact=%d",
        summary.checked,
        summary.unique,
        summary.near_duplicate,
        summary.exact_duplicate,
    )
    return summary
