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

from generator.engine import BudgetExhausted
from service import store
from service.dataset.minhash import MinHashParams
from service.db import autocommit, with_reconnect
from service.store.queue import ClaimedTask
from service.work.finisher import Finisher
from service.work.indexer import DedupIndexer
from service.work.shared_limits import LeaseLost, TaskContext, current_task
from service.work.task import StoryProcessor, SummaryFailed

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
    # keeps pace with generation instead of trailing it by minutes on a saturated host.
    max_dedup_backlog: int = 2_000
    idle_exit: bool = False  # exit once the queue is empty (benchmarks, one-shot runs)
    heartbeat_file: Path | None = None  # touched after each heartbeat (container healthcheck)


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
    ) -> None:
        self.sessionmaker = sessionmaker
        # Short autocommit statements on hot rows (budget prepay): may skip the WAL flush wait.
        self.bookkeeping = bookkeeping or sessionmaker
        self.processor = processor
        self.config = config
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stats = WorkerStats()
        self._stopping = asyncio.Event()
        self.indexer = DedupIndexer(
            sessionmaker=sessionmaker,
            params=getattr(processor, "params", None) or MinHashParams(),
            worker_id=self.worker_id,
            batch=config.dedup_batch,
            interval_s=config.dedup_s,
            backlog_cap=config.max_dedup_backlog,
            stopping=self._stopping.is_set,
        )
        self._running: dict[int, asyncio.Task[None]] = {}
        self._last_progress = (time.monotonic(), 0)
        self._slot_freed = asyncio.Event()
        self.finisher = Finisher(
            db=self._db, worker_id=self.worker_id, max_attempts=config.max_attempts
        )

    def request_stop(self) -> None:
        """Stop claiming; in-flight tasks get the grace period."""
        if not self._stopping.is_set():
            logger.info(
                "worker stopping worker_id=%s in_flight=%d", self.worker_id, len(self._running)
            )
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM / SIGINT start a graceful stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    async def _db(self, what: str, fn: Any, *, stoppable: bool = False) -> Any:
        async def op() -> Any:
            async with self.sessionmaker() as session, session.begin():
                return await fn(session)

        stop = self._stopping.is_set if stoppable else None
        return await with_reconnect(op, what=what, stop=stop)

    async def run(self) -> WorkerStats:
        """Work until stopped (or, with idle_exit, until nothing is left to claim)."""
        await self._db(
            "register",
            lambda s: store.register_worker(
                session=s,
                worker_id=self.worker_id,
                host=socket.gethostname(),
                pid=os.getpid(),
                concurrency=self.config.concurrency,
            ),
        )
        logger.info(
            "worker started worker_id=%s concurrency=%d", self.worker_id, self.config.concurrency
        )
        self._touch_heartbeat_file()
        await self.indexer.probe_backlog()
        background = [
            asyncio.create_task(self._heartbeat_loop()),
            asyncio.create_task(self._reaper_loop()),
            asyncio.create_task(self.indexer.loop()),
        ]
        flusher = asyncio.create_task(self.finisher.loop())
        try:
            await self._claim_loop()
        finally:
            await self._drain()
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await flusher
            for t in background:
                t.cancel()
            for t in background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await self.indexer.catch_up()
            with contextlib.suppress(Exception):
                await self._db(
                    "stop", lambda s: store.stop_worker(session=s, worker_id=self.worker_id)
                )
            logger.info(
                "worker stopped worker_id=%s stories=%d failed=%d released=%d",
                self.worker_id,
                self.stats.stories,
                self.stats.failed,
                self.stats.released,
            )
        return self.stats

    async def _claim_loop(self) -> None:
        idle_rounds = 0
        while not self._stopping.is_set():
            if self.indexer.backlog > self.config.max_dedup_backlog:
                self.stats.dedup_waits += 1
                await asyncio.sleep(self.config.poll_s / 2)
                continue
            free = self.config.concurrency - len(self._running)
            if free <= 0 or (
                self._running and free < min(self.config.claim_batch, self.config.concurrency) // 2
            ):
                self._slot_freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_freed.wait(), timeout=1.0)
                continue
            limit = min(free, self.config.claim_batch)
            try:
                claimed = await self._db(
                    "claim",
                    lambda s, n=limit: store.claim_tasks(
                        session=s, worker_id=self.worker_id, limit=n, lease_s=self.config.lease_s
                    ),
                    stoppable=True,
                )
                claimed = await self._prepay(claimed)
            except Exception:
                logger.exception("claim failed worker_id=%s", self.worker_id)
                await asyncio.sleep(1.0)
                continue
            for task in claimed:
                self.stats.claimed += 1
                self._running[task.id] = asyncio.create_task(self._run_task(task))
            if claimed:
                idle_rounds = 0
                continue
            idle_rounds += 1
            if self.config.idle_exit and not self._running and idle_rounds >= 3:
                return
            self._slot_freed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._slot_freed.wait(), timeout=self.config.poll_s * min(idle_rounds, 5)
                )

    async def _prepay(self, tasks: list[ClaimedTask]) -> list[ClaimedTask]:
        """Reserve the claimed tasks' first requests in one statement (see store.prepay_tasks).

        Its own autocommit statement, not part of the claim: the job row is locked for that
        statement only. A task left unpaid (budget short, or this failed) reserves per request.
        """
        amounts = []
        for task in tasks:
            try:
                usd = store.jobs.money(self.processor.reservation(task))
            except Exception:  # e.g. an unpriced model: the engine reports it on the request
                continue
            amounts.append((task.id, task.job_id, usd))
        if not amounts:
            return tasks

        async def op() -> dict[int, Any]:
            async with self.bookkeeping() as session:
                await autocommit(session)
                return await store.prepay_tasks(
                    session=session, worker_id=self.worker_id, amounts=amounts
                )

        try:
            got = await with_reconnect(op, what="prepay")
        except Exception:
            logger.exception("budget prepay failed worker_id=%s", self.worker_id)
            return tasks
        return [
            dataclasses.replace(task, prepaid=got[task.id]) if task.id in got else task
            for task in tasks
        ]

    async def _run_task(self, task: ClaimedTask) -> None:
        ctx = TaskContext(
            job_id=task.job_id, task_id=task.id, worker_id=self.worker_id, prepaid=task.prepaid
        )
        current_task.set(ctx)
        try:
            try:
                result = await self.processor.process(task)
            except BudgetExhausted:
                await self._budget_stop(task, ctx)
                return
            except SummaryFailed as exc:
                result = store.TaskResult(outcome="retry", error=str(exc))
            except LeaseLost as exc:
                # finish_task sees the lost lease: it records the requests, stores nothing.
                result = store.TaskResult(outcome="retry", error=str(exc))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.exception("task crashed task_id=%d", task.id)
                result = store.TaskResult(outcome="retry", error=f"{type(exc).__name__}: {exc}")
            result.requests = list(ctx.requests)
            # The slot stays taken until the story is durable.
            status = await asyncio.shield(self.finisher.submit(task, result))
            self._count(task, status, result)
        finally:
            self._running.pop(task.id, None)
            self._slot_freed.set()

    def _count(self, task: ClaimedTask, status: str, result: store.TaskResult) -> None:
        if status == "done":
            self.stats.stories += 1
        elif status == "failed":
            self.stats.failed += 1
            logger.warning(
                "task failed task_id=%d job_id=%s error=%s", task.id, task.job_id, result.error
            )
        elif status == "lost":
            self.stats.lost += 1
            logger.warning("task lease lost task_id=%d", task.id)
        else:
            self.stats.retried += 1

    async def _budget_stop(self, task: ClaimedTask, ctx: TaskContext) -> None:
        """The job cannot pay for another request: stop it and give this task back."""
        result = store.TaskResult(
            outcome="retry", error="budget exhausted", requests=list(ctx.requests)
        )

        async def op(session: AsyncSession) -> None:
            await store.finish_task(
                session=session,
                task=task,
                worker_id=self.worker_id,
                result=result,
                max_attempts=10**9,
            )
            if await store.mark_budget_exhausted(session=session, job_id=task.job_id):
                logger.warning("job budget exhausted job_id=%s", task.job_id)

        await self._db("budget_stop", op)

    async def _drain(self) -> None:
        """Let in-flight tasks finish within the grace period, then release the rest."""
        if self._running:
            _, pending = await asyncio.wait(
                list(self._running.values()), timeout=self.config.shutdown_grace_s
            )
            ids = [tid for tid, t in self._running.items() if t in pending]
            for t in pending:
                t.cancel()
            for t in pending:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            if ids:
                n = await self._db(
                    "release",
                    lambda s: store.release_tasks(
                        session=s, worker_id=self.worker_id, task_ids=ids
                    ),
                )
                self.stats.released += n
                logger.info("released tasks worker_id=%s n=%d", self.worker_id, n)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            ids = list(self._running)

            async def beat(session: AsyncSession, ids: list[int] = ids) -> None:
                await store.extend_leases(
                    session=session,
                    worker_id=self.worker_id,
                    task_ids=ids,
                    lease_s=self.config.lease_s,
                )
                await store.heartbeat_worker(
                    session=session, worker_id=self.worker_id, in_flight=len(ids)
                )

            try:
                await self._db("heartbeat", beat)
                self._touch_heartbeat_file()
            except Exception:
                logger.exception("heartbeat failed worker_id=%s", self.worker_id)
            self._log_progress()

    def _touch_heartbeat_file(self) -> None:
        path = self.config.heartbeat_file
        if path is not None:
            try:
                path.touch()
            except OSError:
                logger.warning("cannot touch heartbeat file %s", path)

    def _log_progress(self) -> None:
        """One summary line per heartbeat while stories are made (per story only at DEBUG)."""
        now, done = time.monotonic(), self.stats.stories + self.stats.failed
        last_t, last_done = self._last_progress
        self._last_progress = (now, done)
        if done == last_done:
            return
        logger.info(
            "worker progress stories=%d failed=%d retried=%d in_flight=%d rate=%.1f/s",
            self.stats.stories,
            self.stats.failed,
            self.stats.retried,
            len(self._running),
            (done - last_done) / max(now - last_t, 1e-9),
        )

    async def _reaper_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reaper_s)
            try:
                reaped = await self._db(
                    "reap",
                    lambda s: store.reap_expired(session=s, max_attempts=self.config.max_attempts),
                )
            except Exception:
                logger.exception("reaper failed worker_id=%s", self.worker_id)
                continue
            if reaped and any(reaped):
                logger.info("reaped expired leases returned=%d failed=%d", *reaped)
