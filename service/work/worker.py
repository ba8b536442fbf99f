"""The asyncio worker: claim tasks, write stories, keep leases alive, reap, shut down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import store
from service.dataset.minhash import MinHashParams
from service.db import autocommit, with_reconnect
from service.store.queue import ClaimedTask
from service.work.attempt import run_task
from service.work.finisher import Finisher
from service.work.indexer import DedupIndexer
from service.work.task import StoryProcessor
from service.work.upkeep import heartbeat_loop, reaper_loop, touch_heartbeat_file

logger = logging.getLogger(__name__)


@dataclass
class WorkerConfig:
    """How one worker process behaves."""

    concurrency: int = 64
    claim_batch: int = 32
    lease_s: float = 60.0
    heartbeat_s: float = 10.0
    reaper_s: float = 5.0
    max_attempts: int = 5
    shutdown_grace_s: float = 20.0
    poll_s: float = 0.2
    dedup_s: float = 0.25  # how often the indexer looks for stories to check
    dedup_batch: int = 500
    # Stop claiming while more stories than this wait for their near-duplicate check: dedup
    # keeps pace with generation instead of trailing it by minutes on a saturated host. Two
    # indexer batches: at 1M stored, 2,000 left a job's end waiting 1.2-2.1 s for its checks.
    max_dedup_backlog: int = 1_000
    idle_exit: bool = False  # exit once the queue is empty (benchmarks, one-shot runs)
    heartbeat_file: Path | None = None  # touched after each heartbeat (container healthcheck)
    rollups: bool = True  # write the dashboard's per-minute rollups with each finished batch


@dataclass
class WorkerStats:
    """Counters of one worker's life."""

    claimed: int = 0
    stories: int = 0
    retried: int = 0
    failed: int = 0
    lost: int = 0
    released: int = 0
    dedup_waits: int = 0  # claim rounds skipped while the dedup backlog was over its limit
    extra: dict[str, int] = field(default_factory=dict)


class Worker:
    """One worker process: `concurrency` tasks in flight, sharing limits through Postgres."""

    def __init__(
        self,
        *,
        sessionmaker: async_sessionmaker[AsyncSession],
        processor: StoryProcessor,
        config: WorkerConfig,
        worker_id: str | None = None,
        bookkeeping: async_sessionmaker[AsyncSession] | None = None,
        provider_name: str = "unknown",
        batch_loop: Any = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        # Background loop of Batch API jobs (service.work.batches): called with the stop event.
        self.batch_loop = batch_loop
        # Short autocommit statements on hot rows (budget prepay): may skip the WAL flush wait.
        self.bookkeeping = bookkeeping or sessionmaker
        self.processor = processor
        self.config = config
        self.provider_name = provider_name
        self.provider_snapshot: Any = lambda: None  # provider pools' state, sent with heartbeats
        # Takes on the breakers other workers report open (PoolRouter.adopt_peers).
        self.adopt_peers: Any = lambda peers: []
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stats = WorkerStats()
        self._stopping = asyncio.Event()
        self._deadline: float | None = None  # loop time by which a stopping worker exits
        self.indexer = DedupIndexer(
            sessionmaker=sessionmaker,
            params=getattr(processor, "params", None) or MinHashParams(),
            worker_id=self.worker_id,
            batch=config.dedup_batch,
            interval_s=config.dedup_s,
            backlog_cap=config.max_dedup_backlog,
            stopping=self._stopping.is_set,
        )
        self.running: dict[int, asyncio.Task[None]] = {}
        self.last_progress = (time.monotonic(), 0)
        self.slot_freed = asyncio.Event()
        # Jobs this worker leaves alone until a loop time: their budget waits on calls in flight.
        self.budget_waits: dict[uuid.UUID, float] = {}
        # Jobs near the end of their budget: their tasks reserve per call, not at claim time.
        self.tight_jobs: set[uuid.UUID] = set()
        self.finisher = Finisher(
            db=self.db,
            worker_id=self.worker_id,
            max_attempts=config.max_attempts,
            rollups=config.rollups,
        )

    def request_stop(self) -> None:
        """Stop claiming; in-flight tasks get the grace period, the whole stop ends within it."""
        if not self._stopping.is_set():
            logger.info(
                "worker stopping worker_id=%s in_flight=%d", self.worker_id, len(self.running)
            )
            self._deadline = asyncio.get_running_loop().time() + self.config.shutdown_grace_s
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM / SIGINT start a graceful stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    async def db(self, what: str, fn: Any, *, stoppable: bool = False) -> Any:
        """Run `fn(session)` in a transaction, again while the database is unreachable
        (`stoppable`: not once the worker is stopping)."""

        async def op() -> Any:
            async with self.sessionmaker() as session, session.begin():
                return await fn(session)

        stop = self._stopping.is_set if stoppable else None
        return await with_reconnect(op, what=what, stop=stop)

    async def run(self) -> WorkerStats:
        """Work until stopped (or, with idle_exit, until nothing is left to claim)."""
        try:
            await self.db(
                "register",
                lambda s: store.register_worker(
                    session=s,
                    worker_id=self.worker_id,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    concurrency=self.config.concurrency,
                ),
                stoppable=True,
            )
        except Exception:
            if self._stopping.is_set():  # stopped before the database came back
                logger.warning("worker stopped before it started worker_id=%s", self.worker_id)
                return self.stats
            raise
        logger.info(
            "worker started worker_id=%s concurrency=%d", self.worker_id, self.config.concurrency
        )
        touch_heartbeat_file(self)
        await self.indexer.probe_backlog()
        background = [
            asyncio.create_task(heartbeat_loop(self)),
            asyncio.create_task(reaper_loop(self)),
            asyncio.create_task(self.indexer.loop()),
        ]
        if self.batch_loop is not None:
            background.append(asyncio.create_task(self.batch_loop(self._stopping)))
        flusher = asyncio.create_task(self.finisher.loop())
        try:
            await self._claim_loop()
        finally:
            if self._deadline is None:  # idle exit or a crash: the same bounded stop
                self._deadline = asyncio.get_running_loop().time() + self.config.shutdown_grace_s
            self._stopping.set()
            try:
                async with asyncio.timeout_at(self._deadline):
                    await self._drain()
                    await self.finisher.idle()
                    flusher.cancel()
                    await self.indexer.catch_up()
                    await self.db(
                        "stop", lambda s: store.stop_worker(session=s, worker_id=self.worker_id)
                    )
            except (TimeoutError, Exception) as exc:  # the database is gone: exit anyway
                logger.warning(
                    "worker stop cut short worker_id=%s error=%r: leases left to the reaper",
                    self.worker_id,
                    exc,
                )
            left = [*background, flusher, *self.running.values()]
            for t in left:
                t.cancel()
            await asyncio.gather(*left, return_exceptions=True)
            logger.info(
                "worker stopped worker_id=%s stories=%d failed=%d released=%d dedup_waits=%d",
                self.worker_id,
                self.stats.stories,
                self.stats.failed,
                self.stats.released,
                self.stats.dedup_waits,
            )
        return self.stats

    async def _claim_loop(self) -> None:
        idle_rounds = 0
        while not self._stopping.is_set():
            if self.indexer.backlog > self.config.max_dedup_backlog:
                self.stats.dedup_waits += 1
                await asyncio.sleep(self.config.poll_s / 2)
                continue
            free = self.config.concurrency - len(self.running)
            if free <= 0 or (
                self.running and free < min(self.config.claim_batch, self.config.concurrency) // 2
            ):
                self.slot_freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.slot_freed.wait(), timeout=1.0)
                continue
            limit = min(free, self.config.claim_batch)
            now = asyncio.get_running_loop().time()
            self.budget_waits = {j: t for j, t in self.budget_waits.items() if t > now}
            try:
                claimed = await self.db(
                    "claim",
                    lambda s, n=limit, skip=list(self.budget_waits): store.claim_tasks(
                        session=s,
                        worker_id=self.worker_id,
                        limit=n,
                        lease_s=self.config.lease_s,
                        skip_jobs=skip,
                    ),
                    stoppable=True,
                )
                claimed = await self._prepay(claimed)
            except Exception as exc:
                if self._stopping.is_set():
                    break
                logger.warning("claim failed worker_id=%s error=%r", self.worker_id, exc)
                await asyncio.sleep(1.0)
                continue
            for task in claimed:
                self.stats.claimed += 1
                self.running[task.id] = asyncio.create_task(run_task(self, task))
            if claimed:
                idle_rounds = 0
                continue
            idle_rounds += 1
            if (
                self.config.idle_exit
                and not self.running
                and not self.budget_waits
                and idle_rounds >= 3
                and not await self._batch_work_left()
            ):
                return
            self.slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.slot_freed.wait(), timeout=self.config.poll_s * min(idle_rounds, 5)
                )

    async def _batch_work_left(self) -> bool:
        """Whether batch jobs still have work (an idle-exit worker waits for them)."""
        if self.batch_loop is None:
            return False
        from service.work.batches import batch_work_left

        return bool(await self.db("batch work", batch_work_left, stoppable=True))

    async def _prepay(self, tasks: list[ClaimedTask]) -> list[ClaimedTask]:
        """Reserve the claimed tasks' first requests in one statement (see store.prepay_tasks).

        Its own autocommit statement, not part of the claim: the job row is locked for that
        statement only. A task left unpaid (budget short, or this failed) reserves per request.
        """
        amounts = []
        for task in tasks:
            if task.job_id in self.tight_jobs:
                continue
            try:
                _, usd, factor = self.processor.plan(task)
            except Exception:  # e.g. an unpriced model: the engine reports it on the request
                continue
            amounts.append((task.id, task.job_id, usd, factor))
        if not amounts:
            return tasks

        async def op() -> dict[int, Any]:
            async with self.bookkeeping() as session:
                await autocommit(session)
                return await store.prepay_tasks(
                    session=session, worker_id=self.worker_id, amounts=amounts
                )

        try:
            got = await with_reconnect(op, what="prepay", stop=self._stopping.is_set)
        except Exception as exc:
            logger.warning("budget prepay failed worker_id=%s error=%r", self.worker_id, exc)
            return tasks
        return [
            dataclasses.replace(task, prepaid=got[task.id]) if task.id in got else task
            for task in tasks
        ]

    async def _drain(self) -> None:
        """Let in-flight tasks finish until shortly before the deadline; then cut them short.

        A task cut short goes back to the queue through the finisher, its calls in flight
        charged at their reservation (see attempt.run_task).
        """
        assert self._deadline is not None
        loop = asyncio.get_running_loop()
        # Leave time to write what was cut short: half the grace, at most 2 s.
        write_s = min(2.0, self.config.shutdown_grace_s / 2)
        if self.running:
            await asyncio.wait(
                list(self.running.values()),
                timeout=max(self._deadline - write_s - loop.time(), 0.0),
            )
        pending = [t for t in self.running.values() if not t.done()]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if pending:
            logger.info("released tasks worker_id=%s n=%d", self.worker_id, len(pending))
