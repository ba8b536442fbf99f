"""A worker's upkeep: heartbeats that keep its leases, the reaper, progress lines."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service import store
from service.store.providers import live_snapshots

Worker = Any  # service.work.worker.Worker (which imports this module)

logger = logging.getLogger(__name__)


def dead_after_s(heartbeat_s: float) -> float:
    """A worker is dead once its heartbeat is this old: three missed beats and a second."""
    return 3.0 * heartbeat_s + 1.0


async def heartbeat_loop(worker: Worker) -> None:
    """Extend this worker's leases and mark it alive, every heartbeat_s; with provider pools,
    also store their snapshot and open the members other live workers report open."""
    while True:
        await asyncio.sleep(worker.config.heartbeat_s)
        ids = list(worker.running)
        pools = worker.provider_snapshot()

        async def beat(
            session: AsyncSession, ids: list[int] = ids, pools: list[Any] | None = pools
        ) -> list[dict[str, Any]]:
            await store.extend_leases(
                session=session,
                worker_id=worker.worker_id,
                task_ids=ids,
                lease_s=worker.config.lease_s,
            )
            await store.heartbeat_worker(
                session=session, worker_id=worker.worker_id, in_flight=len(ids), providers=pools
            )
            if pools is None:
                return []
            stale = dead_after_s(worker.config.heartbeat_s)
            peers = await live_snapshots(session=session, stale_after_s=stale)
            return [p for p in peers if p["worker"] != worker.worker_id]

        try:
            peers = await worker.db("heartbeat", beat, stoppable=True)
            touch_heartbeat_file(worker)
            worker.adopt_peers(peers)
        except Exception as exc:
            logger.warning("heartbeat failed worker_id=%s error=%r", worker.worker_id, exc)
        log_progress(worker)


async def reaper_loop(worker: Worker) -> None:
    """Return expired leases, and dead workers' leases, to the queue (one reaper at a time)."""
    while True:
        await asyncio.sleep(worker.config.reaper_s)
        try:
            reaped = await worker.db(
                "reap",
                lambda s: store.reap_expired(
                    session=s,
                    max_attempts=worker.config.max_attempts,
                    dead_after_s=dead_after_s(worker.config.heartbeat_s),
                ),
                stoppable=True,
            )
        except Exception as exc:
            logger.warning("reaper failed worker_id=%s error=%r", worker.worker_id, exc)
            continue
        if reaped and any(reaped):
            logger.info("reaped leases of dead workers or expired returned=%d failed=%d", *reaped)


def touch_heartbeat_file(worker: Worker) -> None:
    """Touch the container healthcheck's file."""
    path = worker.config.heartbeat_file
    if path is not None:
        try:
            path.touch()
        except OSError:
            logger.warning("cannot touch heartbeat file %s", path)


def log_progress(worker: Worker) -> None:
    """One summary line per heartbeat while stories are made (per story only at DEBUG)."""
    stats = worker.stats
    now, done = time.monotonic(), stats.stories + stats.failed
    last_t, last_done = worker.last_progress
    worker.last_progress = (now, done)
    if done == last_done:
        return
    logger.info(
        "worker progress stories=%d failed=%d retried=%d in_flight=%d rate=%.1f/s",
        stats.stories,
        stats.failed,
        stats.retried,
        len(worker.running),
        (done - last_done) / max(now - last_t, 1e-9),
    )
