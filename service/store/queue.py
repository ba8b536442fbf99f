"""The task queue: claim under a lease, extend leases, reap expired ones, release."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Key of the advisory lock that lets one reaper run at a time across all processes.
REAPER_LOCK_KEY = 0x7453_5245_4150  # "tSREAP"


@dataclass(frozen=True)
class ClaimedTask:
    """A task leased to one worker, with what it needs from its job."""

    id: int
    job_id: uuid.UUID
    index: int
    recipe: dict[str, Any]
    model: str
    attempts: int
    template_version: str
    instruct: bool
    summary_model: str | None
    max_tokens: int
    seed: int
    prepaid: Decimal = Decimal(0)  # budget reserved for it when it was claimed


# Jobs first, then each job's tasks in id order through the partial (job_id, id) index: a claim
# reads about `limit` index entries, not every pending task (a sort over all pending tasks of a
# million-story job per claim).
_RUNNABLE_JOBS = text(
    "SELECT id FROM jobs j WHERE status IN ('queued', 'running') "
    "AND EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.id AND t.status = 'pending') "
    "ORDER BY priority DESC, created_at, id"
)

_CLAIM = text(
    """
    WITH picked AS (
        SELECT id FROM tasks
        WHERE job_id = :job_id AND status = 'pending'
        ORDER BY id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE tasks t
    SET status = 'running', lease_owner = :worker_id, attempts = t.attempts + 1,
        lease_expires_at = now() + make_interval(secs => :lease_s), updated_at = now()
    FROM picked, jobs j
    WHERE t.id = picked.id AND j.id = t.job_id
    RETURNING t.id, t.job_id, t.index, t.recipe, t.model, t.attempts, j.template_version,
              j.instruct, j.summary_model, j.max_tokens, j.seed
    """
)


async def claim_tasks(
    *, session: AsyncSession, worker_id: str, limit: int, lease_s: float
) -> list[ClaimedTask]:
    """Lease up to `limit` pending tasks of runnable jobs, highest priority first."""
    claimed: list[ClaimedTask] = []
    for (job_id,) in (await session.execute(_RUNNABLE_JOBS)).all():
        rows = (
            await session.execute(
                _CLAIM,
                {
                    "job_id": job_id,
                    "worker_id": worker_id,
                    "limit": limit - len(claimed),
                    "lease_s": lease_s,
                },
            )
        ).all()
        claimed += sorted((ClaimedTask(*row) for row in rows), key=lambda task: task.id)
        if len(claimed) >= limit:
            break
    job_ids = list({task.job_id for task in claimed})
    if job_ids:
        await session.execute(
            text(
                "UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, now()), "
                "updated_at = now() WHERE id = ANY(:ids) AND status = 'queued'"
            ),
            {"ids": job_ids},
        )
    return claimed


async def extend_leases(
    *, session: AsyncSession, worker_id: str, task_ids: list[int], lease_s: float
) -> int:
    """Heartbeat: push the lease of this worker's running tasks forward."""
    if not task_ids:
        return 0
    result = await session.execute(
        text(
            "UPDATE tasks SET lease_expires_at = now() + make_interval(secs => :lease_s) "
            "WHERE id = ANY(:ids) AND lease_owner = :worker_id AND status = 'running'"
        ),
        {"ids": task_ids, "worker_id": worker_id, "lease_s": lease_s},
    )
    return result.rowcount or 0


_REAP = text(
    """
    WITH expired AS (
        SELECT id, job_id, reserved_usd FROM tasks
        WHERE status = 'running' AND lease_expires_at < now()
        ORDER BY lease_expires_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), updated AS (
        UPDATE tasks t
        SET status = CASE WHEN t.attempts >= :max_attempts THEN 'failed' ELSE 'pending' END,
            last_error = CASE WHEN t.attempts >= :max_attempts
                THEN COALESCE(t.last_error, 'lease expired') ELSE t.last_error END,
            lease_owner = NULL, lease_expires_at = NULL, reserved_usd = 0, updated_at = now()
        FROM expired e WHERE t.id = e.id
        RETURNING t.id, t.job_id, t.status, e.reserved_usd
    ), per_job AS (
        SELECT job_id, SUM(reserved_usd) AS reserved,
               COUNT(*) FILTER (WHERE status = 'failed') AS failed
        FROM updated GROUP BY job_id
    ), jobs_updated AS (
        UPDATE jobs j
        SET reserved_usd = GREATEST(j.reserved_usd - p.reserved, 0),
            failed = j.failed + p.failed,
            status = CASE
                WHEN j.status IN ('queued', 'running')
                     AND j.completed + j.rejected + j.failed + p.failed >= j.n_stories
                THEN CASE WHEN j.completed + j.rejected = 0 THEN 'failed' ELSE 'completed' END
                ELSE j.status END,
            finished_at = CASE
                WHEN j.completed + j.rejected + j.failed + p.failed >= j.n_stories
                     AND j.finished_at IS NULL
                THEN now() ELSE j.finished_at END,
            updated_at = now()
        FROM per_job p WHERE j.id = p.job_id
        RETURNING j.id
    )
    SELECT
        (SELECT COUNT(*) FROM updated WHERE status = 'pending'),
        (SELECT COUNT(*) FROM updated WHERE status = 'failed'),
        (SELECT COUNT(*) FROM jobs_updated)
    """
)


async def reap_expired(
    *, session: AsyncSession, max_attempts: int, limit: int = 1000
) -> tuple[int, int] | None:
    """Return expired leases to the queue (or fail them); None when another reaper runs.

    Uses a transaction-scoped advisory lock, so it is released at the caller's commit.
    """
    got = (
        await session.execute(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": REAPER_LOCK_KEY}
        )
    ).scalar_one()
    if not got:
        return None
    returned, failed, _ = (
        await session.execute(_REAP, {"limit": limit, "max_attempts": max_attempts})
    ).one()
    return int(returned), int(failed)


async def release_tasks(
    *, session: AsyncSession, worker_id: str, task_ids: list[int], refund_attempt: bool = True
) -> int:
    """Give tasks this worker holds back to the queue (shutdown, budget stop) and their budget."""
    if not task_ids:
        return 0
    result = await session.execute(
        text(
            """
            WITH released AS (
                UPDATE tasks t
                SET status = CASE WHEN j.status = 'cancelled' THEN 'cancelled' ELSE 'pending' END,
                    attempts = GREATEST(t.attempts - CASE WHEN :refund THEN 1 ELSE 0 END, 0),
                    lease_owner = NULL, lease_expires_at = NULL, updated_at = now(),
                    reserved_usd = 0
                FROM jobs j, (SELECT id, reserved_usd FROM tasks WHERE id = ANY(:ids)
                              FOR UPDATE) old
                WHERE t.id = old.id AND j.id = t.job_id
                  AND t.lease_owner = :worker_id AND t.status = 'running'
                RETURNING t.job_id, old.reserved_usd
            ), per_job AS (
                SELECT job_id, SUM(reserved_usd) AS reserved, COUNT(*) AS n
                FROM released GROUP BY job_id
            )
            UPDATE jobs j SET reserved_usd = GREATEST(j.reserved_usd - p.reserved, 0)
            FROM per_job p WHERE j.id = p.job_id
            RETURNING p.n
            """
        ),
        {"ids": task_ids, "worker_id": worker_id, "refund": refund_attempt},
    )
    return sum(int(row[0]) for row in result)


async def queue_depth(*, session: AsyncSession) -> dict[str, int]:
    """Tasks by status over runnable jobs."""
    rows = await session.execute(text("SELECT status, COUNT(*) FROM tasks GROUP BY status"))
    return {status: int(count) for status, count in rows}
