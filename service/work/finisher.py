"""Group commit of finished tasks: everything finished since the last write, one transaction."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from service import store
from service.store.queue import ClaimedTask

logger = logging.getLogger(__name__)

Db = Callable[[str, Callable[[Any], Awaitable[Any]]], Awaitable[Any]]


class Finisher:
    """Collects finished tasks and writes them in batches; each submitter awaits its status.

    A task's slot stays taken until its story is durable, so a worker never has more stories
    in memory than its concurrency.
    """

    def __init__(
        self, *, db: Db, worker_id: str, max_attempts: int, batch: int = 500, rollups: bool = True
    ) -> None:
        self.rollups = rollups
        self._db = db
        self.worker_id = worker_id
        self.max_attempts = max_attempts
        self.batch = batch
        self._finished: list[tuple[ClaimedTask, store.TaskResult, asyncio.Future[str]]] = []
        self._event = asyncio.Event()
        self._writing = False
        self._idle = asyncio.Event()

    def submit(self, task: ClaimedTask, result: store.TaskResult) -> asyncio.Future[str]:
        """Queue a result; the future gives the task's stored status ("done", "retry", ...)."""
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._finished.append((task, result, done))
        self._event.set()
        return done

    async def loop(self) -> None:
        """Write what has finished, as it finishes, until cancelled."""
        while True:
            await self._event.wait()
            self._event.clear()
            # Let tasks finishing in the same instant join this batch.
            await asyncio.sleep(0.005)
            batch, self._finished = self._finished[: self.batch], self._finished[self.batch :]
            if self._finished:
                self._event.set()
            if batch:
                self._writing = True
                try:
                    await self._flush(batch)
                finally:
                    self._writing = False
            if not self._finished:
                self._idle.set()

    async def idle(self) -> None:
        """Wait until everything submitted so far is written (the loop must be running)."""
        while self._finished or self._writing:
            self._idle.clear()
            await self._idle.wait()

    async def _flush(
        self, batch: list[tuple[ClaimedTask, store.TaskResult, asyncio.Future[str]]]
    ) -> None:
        items = [(task, result) for task, result, _ in batch]
        try:
            statuses = await self._db(
                "finish",
                lambda s: store.finish_tasks(
                    session=s,
                    items=items,
                    worker_id=self.worker_id,
                    max_attempts=self.max_attempts,
                    commit=True,
                    rollups=self.rollups,
                ),
            )
        except Exception:
            if len(batch) == 1:
                task, result, done = batch[0]
                logger.exception("finishing task failed task_id=%d", task.id)
                # Keep the paid-for requests; drop what could not be stored.
                fallback = store.TaskResult(
                    outcome="retry", requests=result.requests, error="could not store the result"
                )
                try:
                    statuses = await self._db(
                        "finish",
                        lambda s: store.finish_tasks(
                            session=s,
                            items=[(task, fallback)],
                            worker_id=self.worker_id,
                            max_attempts=self.max_attempts,
                        ),
                    )
                except Exception as exc:
                    done.set_exception(exc)
                    return
            else:
                # One bad row must not sink the others: write them one by one.
                for one in batch:
                    await self._flush([one])
                return
        for (_, _, done), status in zip(batch, statuses, strict=True):
            if not done.done():
                done.set_result(status)
