"""Provider batches in the store: open one over leased tasks, move it along, read it back."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.batch_report import COUNTS, batch_members, figures
from service.store.models_batch import ProviderBatch
from service.store.queue import ClaimedTask
from service.store.vocabularies import vocabularies_by_sha

# Batch tasks are leased to this owner (not a worker: the reaper leaves them to their lease,
# which outlives the provider's 24 h window) and finished under it by whichever process polls.
BATCH_OWNER = "batch"

OPEN_STATES = ("building", "uploaded", "submitted")


async def open_batch(
    *,
    session: AsyncSession,
    job_id: uuid.UUID,
    model: str,
    task_ids: list[int],
    reserved_usd: Decimal,
) -> ProviderBatch:
    """A new batch in state `building` over tasks already leased to BATCH_OWNER."""
    batch = ProviderBatch(
        key=uuid.uuid4(), job_id=job_id, model=model, task_ids=task_ids, reserved_usd=reserved_usd
    )
    session.add(batch)
    await session.flush()
    return batch


async def due_batches(*, session: AsyncSession, limit: int = 20) -> list[ProviderBatch]:
    """Open batches whose next step is due, oldest first (locked: one process moves each)."""
    query = (
        select(ProviderBatch)
        .where(ProviderBatch.state.in_(OPEN_STATES))
        .where(
            (ProviderBatch.next_poll_at.is_(None)) | (ProviderBatch.next_poll_at <= text("now()"))
        )
        .order_by(ProviderBatch.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(query)).scalars())


async def set_batch(*, session: AsyncSession, batch_id: int, **fields: Any) -> None:
    """Store what a provider call returned, before the next call."""
    await session.execute(
        update(ProviderBatch)
        .where(ProviderBatch.id == batch_id)
        .values(**fields, updated_at=text("now()"))
    )


_BATCH_TASKS = text(
    """
    SELECT t.id, t.job_id, t.index, t.recipe, t.model, t.attempts, j.template_version,
           j.instruct, j.summary_model, j.max_tokens, j.seed, t.reserved_usd, j.prices,
           j.vocabulary ->> 'sha256'
    FROM tasks t JOIN jobs j ON j.id = t.job_id
    WHERE t.id = ANY(:ids) AND t.status = 'running' AND t.lease_owner = :owner
    ORDER BY t.id
    """
)


async def batch_tasks(*, session: AsyncSession, task_ids: list[int]) -> list[ClaimedTask]:
    """The batch's tasks still leased to it (a task the reaper took back is not among them)."""
    rows = (await session.execute(_BATCH_TASKS, {"ids": task_ids, "owner": BATCH_OWNER})).all()
    # The stories are checked against their job's vocabulary when the batch comes back.
    vocabularies = await vocabularies_by_sha(session=session, shas=[row[13] for row in rows])
    return [
        ClaimedTask(
            *row[:11],
            prepaid=Decimal(row[11]),
            prices=row[12],
            vocabulary=vocabularies.get(row[13] or ""),
        )
        for row in rows
    ]


async def open_batches(*, session: AsyncSession, job_id: uuid.UUID) -> int:
    """How many of a job's batches have not ended."""
    return int(
        (
            await session.execute(
                text(
                    "SELECT count(*) FROM provider_batches "
                    "WHERE job_id = :job_id AND state = ANY(:open)"
                ),
                {"job_id": job_id, "open": list(OPEN_STATES)},
            )
        ).scalar_one()
    )


async def batch_summary(*, session: AsyncSession, job_id: uuid.UUID) -> dict[str, Any]:
    """A job's batches for the API: counts by state, the money saved, and for a pooled model
    how many batches each member holds."""
    row = (
        await session.execute(
            text(f"SELECT {COUNTS} FROM provider_batches b WHERE b.job_id = :job_id"),
            {"job_id": job_id},
        )
    ).one()
    members = await batch_members(session=session, job_ids=[job_id])
    return {**figures(row), "members": members.get(job_id, {})}


async def batch_totals(*, session: AsyncSession) -> dict[str, float]:
    """Batches by state and the money all finished batches saved, for /metrics."""
    rows = (
        await session.execute(
            text(
                "SELECT state, count(*), COALESCE(sum(online_cost_usd - cost_usd), 0) "
                "FROM provider_batches GROUP BY state"
            )
        )
    ).all()
    totals: dict[str, float] = {state: float(n) for state, n, _ in rows}
    totals["saved_usd"] = float(sum((Decimal(saved) for _, _, saved in rows), Decimal(0)))
    return totals
