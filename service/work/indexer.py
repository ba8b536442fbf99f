"""The worker's dedup indexer: near-duplicate checks of stored stories, one worker at a time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from service.dataset.dedup import index_pending
from service.dataset.minhash import MinHashParams
from service.db import is_disconnect, with_reconnect
from service.store import dedup as dedup_store
from service.store.signature_cache import SKETCH_ONLY_MAX_BYTES, SignatureCache

logger = logging.getLogger(__name__)


# A lead whose connection has been idle this long (its process paused) loses the lead to
# another worker: Postgres ends the session, and the session's lock goes with it.
LEAD_IDLE_TIMEOUT = "15s"
UNLOCK_TIMEOUT_S = 2.0  # an explicit unlock on the way out; the close releases it anyway


class DedupIndexer:
    """Checks stored stories in big batches (see `index_pending`) and tracks the backlog the
    claim loop waits on: one writer, and no dedup lock in the transactions that store stories.

    One worker leads for as long as it lives: it holds a session-level advisory lock on a
    connection of its own and runs its batches there, so its cache of root sketches keeps
    serving it. Taking turns batch by batch (a transaction-level lock) had every worker warm
    a cache of its own: 40% more signatures read from Postgres in a 10,000-story job at 1M.
    The lock goes when the lead exits, loses its connection, or stalls (LEAD_IDLE_TIMEOUT)."""

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
        self._lead: tuple[AsyncConnection, async_sessionmaker[AsyncSession]] | None = None

    @property
    def leading(self) -> bool:
        """Whether this worker holds the indexer's lead now."""
        return self._lead is not None

    async def _take_lead(self) -> async_sessionmaker[AsyncSession] | None:
        """Sessions on this worker's lead connection, or None while another worker leads."""
        if self._lead is not None:
            return self._lead[1]
        engine = self.sessionmaker.kw["bind"]
        conn = await engine.connect()
        try:
            got = (
                await conn.execute(
                    text("SELECT pg_try_advisory_lock(:ns, :key)"),
                    {"ns": dedup_store.LOCK_NAMESPACE, "key": dedup_store.INDEXER_KEY},
                )
            ).scalar_one()
            if got:
                await conn.execute(text(f"SET idle_session_timeout = '{LEAD_IDLE_TIMEOUT}'"))
            await conn.commit()
        except BaseException:
            await self._discard(conn)
            raise
        if not got:
            await conn.close()  # back to the pool as it came: no lock, no setting
            return None
        self._lead = conn, async_sessionmaker(bind=conn, expire_on_commit=False)
        logger.info("dedup indexer lead taken worker_id=%s", self.worker_id)
        return self._lead[1]

    @staticmethod
    async def _discard(conn: AsyncConnection) -> None:
        # Never back to the pool: the next user would inherit the lock and the timeout.
        with contextlib.suppress(Exception):
            await conn.invalidate()
        with contextlib.suppress(Exception):
            await conn.close()

    async def release_lead(self, *, unlock: bool = True) -> None:
        """Give the lead up (on the way out, or after an error on its connection); `unlock`
        False when the connection's state is unknown (cancelled mid-statement, or gone)."""
        if self._lead is None:
            return
        conn, self._lead = self._lead[0], None
        try:
            if unlock:
                # Unlocked here, another worker can lead at once; closing alone leaves that to
                # the server's backend exit, a moment after the socket closes.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(UNLOCK_TIMEOUT_S):
                        await conn.execute(
                            text("SELECT pg_advisory_unlock(:ns, :key)"),
                            {"ns": dedup_store.LOCK_NAMESPACE, "key": dedup_store.INDEXER_KEY},
                        )
        finally:
            await self._discard(conn)

    async def _lead_batch(self) -> int | None:
        sessions = await self._take_lead()
        if sessions is None:
            return None
        try:
            return await index_pending(sessions, self.params, limit=self.batch, cache=self.cache)
        except Exception as exc:
            if is_disconnect(exc):  # the lock went with the connection: take it again
                await self.release_lead(unlock=False)
            raise  # else the transaction rolled back and the connection is as it was
        except BaseException:
            await self.release_lead(unlock=False)  # cancelled mid-statement: state unknown
            raise

    async def _any_batch(self) -> int:
        return await index_pending(
            self.sessionmaker, self.params, limit=self.batch, cache=self.cache
        )

    async def _index(self, *, lead: bool) -> int | None:
        op = self._lead_batch if lead else self._any_batch
        return await with_reconnect(op, what="dedup", stop=self.stopping)

    async def probe_backlog(self) -> None:
        """Count the stories waiting for their check (capped: only "over the limit" matters)."""

        async def op() -> int:
            async with self.sessionmaker() as session, session.begin():
                return await dedup_store.count_undeduped(session=session, cap=self.backlog_cap + 1)

        self.backlog = await with_reconnect(op, what="dedup_backlog", stop=self.stopping)

    async def loop(self) -> None:
        """Check batches while there is work, poll every `interval_s` otherwise."""
        try:
            await self._loop()
        finally:
            await self.release_lead()

    async def _loop(self) -> None:
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
