"""The worker's dedup indexer: near-duplicate checks of stored stories, one worker at a time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.dataset.dedup import index_pending
from service.dataset.minhash import MinHashParams
from service.db import is_disconnect, with_reconnect
from service.store import dedup as dedup_store
from service.store.signature_cache import SKETCH_ONLY_MAX_BYTES, SignatureCache

logger = logging.getLogger(__name__)


class DedupIndexer:
    """Checks stored stories in big batches (see `index_pending`) and tracks the backlog the
    claim loop waits on: one writer, and no dedup lock in the transactions that store stories."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        params: MinHashParams,
        worker_id: str,
        batch: int,
        interval_s: float,
        backlog_cap: int,
        stopping: Callable[[], bool],
    ) -> None:
        self.sessionmaker = sessionmaker
        self.params = params
        self.worker_id = worker_id
        self.batch = batch
        self.interval_s = interval_s
        self.backlog_cap = backlog_cap
        self.stopping = stopping
        self.backlog = 0  # stories waiting for their check, as last seen
        # Sketches only (256 MB at most, 2M roots): the worker's memory is for generation.
        self.cache = SignatureCache(params.num_perm, max_bytes=SKETCH_ONLY_MAX_BYTES, full=False)

    async def _index(self, *, lead: bool) -> int | None:
        return await with_reconnect(
            lambda: index_pending(
                self.sessionmaker, self.params, limit=self.batch, lead=lead, cache=self.cache
            ),
            what="dedup",
            stop=self.stopping,
        )

    async def probe_backlog(self) -> None:
        """Count the stories waiting for their check (capped: only "over the limit" matters)."""

        async def op() -> int:
            async with self.sessionmaker() as session, session.begin():
                return await dedup_store.count_undeduped(session=session, cap=self.backlog_cap + 1)

        self.backlog = await with_reconnect(op, what="dedup_backlog", stop=self.stopping)

    async def loop(self) -> None:
        """Check batches while there is work, poll every `interval_s` otherwise."""
        while True:
            try:
                n = await self._index(lead=True)
                await self.probe_backlog()
            except Exception as exc:
                # A failing index (e.g. parameters changed under it) must not stop generation.
                if is_disconnect(exc):  # the database is gone (we are stopping): one line
                    logger.warning(
                        "dedup indexer failed worker_id=%s error=%r", self.worker_id, exc
                    )
                else:
                    logger.exception("dedup indexer failed worker_id=%s", self.worker_id)
                n, self.backlog = None, 0
            if n is None or n < self.batch:
                await asyncio.sleep(self.interval_s)

    async def catch_up(self) -> None:
        """On the way out, check what this worker (and others) stored and nobody checked yet."""
        try:
            while await self._index(lead=False) == self.batch:
                pass
        except Exception as exc:
            if is_disconnect(exc):
                logger.warning("dedup catch-up failed worker_id=%s error=%r", self.worker_id, exc)
            else:
                logger.exception("dedup catch-up failed worker_id=%s", self.worker_id)
