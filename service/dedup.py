"""Dedup orchestration: signatures outside transactions, the index in Postgres (store.dedup)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.minhash import MinHasher, MinHashParams, text_hash
from service.processor import StoryProcessor
from service.store import dedup as dedup_store
from service.store.dedup import SIGNATURE_KEY
from service.store.queue import ClaimedTask

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


def signatures(texts: Sequence[str], params: MinHashParams) -> np.ndarray:
    return hasher_for(params).signatures(texts)


def prepare_story(story: dict[str, Any], params: MinHashParams) -> None:
    """Add the normalised-text hash and the signature to a story dict before it is stored."""
    story["text_hash"] = text_hash(story["text"])
    if story.get("accepted", True):
        story[SIGNATURE_KEY] = signatures([story["text"]], params)[0]


class DedupStoryProcessor(StoryProcessor):
    """StoryProcessor that prepares each story for dedup on arrival (hash and signature here,
    outside the transaction; the store indexes it in the transaction that writes it)."""

    def __init__(self, engines: Any, params: MinHashParams | None = None) -> None:
        super().__init__(engines)
        self.params = params or MinHashParams()

    async def after_story(self, task: ClaimedTask, story: dict[str, Any]) -> None:
        await super().after_story(task, story)
        prepare_story(story, self.params)


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
    after = 0
    while True:
        async with sessionmaker() as session:
            batch = await dedup_store.undeduped_stories(
                session=session, after_id=after, limit=batch_size
            )
        if not batch:
            break
        texts = [t for _, t in batch]
        sigs = signatures(texts, params)  # outside the transaction
        items = [
            dedup_store.DedupItem(sid, text_hash(t), sig)
            for (sid, t), sig in zip(batch, sigs, strict=True)
        ]
        async with sessionmaker() as session, session.begin():
            summary.add(
                await dedup_store.index_stories(session=session, items=items, params=params)
            )
        after = batch[-1][0]
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
