"""Batch API jobs for the dashboard: each job's batches by state and the money saved."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Batches by state (a done batch with an error failed), their cost and online cost, over the
# provider_batches rows aliased `b`.
COUNTS = (
    "count(b.id), "
    "count(b.id) FILTER (WHERE b.state IN ('building', 'uploaded')), "
    "count(b.id) FILTER (WHERE b.state = 'submitted'), "
    "count(b.id) FILTER (WHERE b.state = 'done' AND b.last_error IS NULL), "
    "count(b.id) FILTER (WHERE b.state = 'done' AND b.last_error IS NOT NULL), "
    "COALESCE(sum(b.cost_usd), 0), COALESCE(sum(b.online_cost_usd), 0), "
    "COALESCE(sum(b.resubmitted), 0)"
)
_KEYS = ("batches", "preparing", "in_progress", "completed", "failed")


def figures(row: Any) -> dict[str, Any]:
    """A COUNTS row as the API and the dashboard show it."""
    *counts, cost, online, resubmitted = row
    return {
        **{k: int(v) for k, v in zip(_KEYS, counts, strict=True)},
        "cost_usd": float(cost),
        "online_cost_usd": float(online),
        "saved_usd": float(Decimal(online) - Decimal(cost)),
        "resubmitted_tasks": int(resubmitted),
    }


async def batch_members(
    *, session: AsyncSession, job_ids: list[uuid.UUID]
) -> dict[uuid.UUID, dict[str, int]]:
    """Per job, how many batches each pool member holds (a NULL member, the single provider's,
    is not listed)."""
    if not job_ids:
        return {}
    rows = await session.execute(
        text(
            "SELECT job_id, member, count(*) FROM provider_batches "
            "WHERE job_id = ANY(:ids) AND member IS NOT NULL "
            "GROUP BY job_id, member ORDER BY member"
        ),
        {"ids": job_ids},
    )
    out: dict[uuid.UUID, dict[str, int]] = {}
    for job_id, member, n in rows:
        out.setdefault(job_id, {})[member] = int(n)
    return out


async def batch_jobs(*, session: AsyncSession, limit: int = 50) -> dict[str, Any]:
    """The newest batch-mode jobs with their batches, and totals over every batch job."""
    rows = await session.execute(
        text(
            f"SELECT j.id, j.name, j.status, {COUNTS} "
            "FROM (SELECT id, name, status, created_at FROM jobs WHERE mode = 'batch' "
            "      ORDER BY created_at DESC, id LIMIT :limit) j "
            "LEFT JOIN provider_batches b ON b.job_id = j.id "
            "GROUP BY j.id, j.name, j.status, j.created_at ORDER BY j.created_at DESC, j.id"
        ),
        {"limit": limit},
    )
    jobs = [
        {"id": str(job_id), "name": name, "status": status, **figures(rest)}
        for job_id, name, status, *rest in rows
    ]
    members = await batch_members(session=session, job_ids=[uuid.UUID(j["id"]) for j in jobs])
    for job in jobs:
        job["members"] = members.get(uuid.UUID(job["id"]), {})
    total = (
        await session.execute(
            text(
                f"SELECT count(DISTINCT j.id), {COUNTS} FROM jobs j "
                "LEFT JOIN provider_batches b ON b.job_id = j.id WHERE j.mode = 'batch'"
            )
        )
    ).one()
    return {"jobs": jobs, "totals": {"jobs": int(total[0]), **figures(total[1:])}}
