"""Jobs: creation with their tasks, reads, state transitions, live rates from rollups."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import String, cast, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.models import Job

ACTIVE_STATUSES = ("queued", "running")
FINAL_STATUSES = ("completed", "cancelled", "failed", "budget_exhausted")


class JobNotFound(LookupError):
    """No job with that id."""


class InvalidTransition(ValueError):
    """The job's state does not allow the requested action."""

    def __init__(self, job_id: uuid.UUID, status: str, action: str) -> None:
        super().__init__(f"cannot {action} a job that is {status}")
        self.job_id = job_id
        self.status = status
        self.action = action


@dataclass(frozen=True)
class TaskSpec:
    """One task of a new job."""

    index: int
    recipe: dict[str, Any]
    model: str


async def create_job(
    *,
    session: AsyncSession,
    job_id: uuid.UUID,
    fields: dict[str, Any],
    tasks: list[TaskSpec] | None = None,
) -> Job:
    """Insert a job; with `tasks`, also exactly those task rows (one statement).

    Without `tasks` no task row is written: claims make them in chunks as workers need them
    (see queue.claim_tasks), with recipe and model derived from (seed, index), so the API
    holds no per-task state and answers at once whatever the job's size.
    """
    job = Job(id=job_id, **fields, tasks_made=fields["n_stories"] if tasks is not None else 0)
    session.add(job)
    await session.flush()
    if tasks is not None:
        await session.execute(
            text(
                "INSERT INTO tasks (job_id, index, recipe, model) "
                "SELECT :job_id, i, r::jsonb, m "
                "FROM unnest(CAST(:indexes AS integer[]), CAST(:recipes AS text[]), "
                "CAST(:models AS text[])) AS u(i, r, m)"
            ),
            {
                "job_id": job_id,
                "indexes": [t.index for t in tasks],
                "recipes": [json.dumps(t.recipe) for t in tasks],
                "models": [t.model for t in tasks],
            },
        )
    await session.refresh(job)
    return job


async def get_job(*, session: AsyncSession, job_id: uuid.UUID) -> Job:
    """One job or JobNotFound."""
    job = await session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise JobNotFound(str(job_id))
    return job


async def list_jobs(
    *,
    session: AsyncSession,
    status: str | None = None,
    limit: int = 100,
    id_prefix: str | None = None,
) -> list[Job]:
    """Newest jobs first; with id_prefix, only jobs whose id starts with it (hex, dashes)."""
    query = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
    if status is not None:
        query = query.where(Job.status == status)
    if id_prefix:
        query = query.where(cast(Job.id, String).startswith(id_prefix.lower(), autoescape=True))
    return list((await session.execute(query)).scalars())


_TRANSITIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "pause": (("queued", "running"), "paused"),
    "resume": (("paused", "budget_exhausted"), "resumed"),
    "cancel": (("queued", "running", "paused", "budget_exhausted"), "cancelled"),
}


async def transition_job(*, session: AsyncSession, job_id: uuid.UUID, action: str) -> Job:
    """pause / resume / cancel in one guarded UPDATE; InvalidTransition when not allowed.

    A budget-exhausted job resumes only once what is left pays for another story (1.25 times
    its mean cost so far: raise the budget first); its held tasks go back to pending. A
    cancelled job's waiting tasks are closed.
    """
    allowed, target = _TRANSITIONS[action]
    if target == "resumed":
        new_status = "CASE WHEN started_at IS NULL THEN 'queued' ELSE 'running' END"
    else:
        new_status = f"'{target}'"
    row = (
        await session.execute(
            text(
                f"UPDATE jobs SET status = {new_status}, updated_at = now(), "
                "finished_at = CASE WHEN :final THEN now() WHEN :resume THEN NULL "
                "ELSE finished_at END, "
                "last_error = CASE WHEN :resume THEN NULL ELSE last_error END "
                "WHERE id = :id AND status = ANY(:allowed) "
                "AND (NOT :resume OR status <> 'budget_exhausted' "
                "     OR budget_usd - spent_usd - reserved_usd >= GREATEST(1.25 * spent_usd "
                "        / NULLIF(completed + rejected, 0), 0.000000001)) "
                "RETURNING id"
            ),
            {
                "id": job_id,
                "allowed": list(allowed),
                "final": target == "cancelled",
                "resume": target == "resumed",
            },
        )
    ).first()
    if row is None:
        job = await get_job(session=session, job_id=job_id)
        if job.status == "budget_exhausted" and action == "resume":
            raise InvalidTransition(job_id, "out of budget (raise its budget first)", action)
        raise InvalidTransition(job_id, job.status, action)
    if target in ("cancelled", "resumed"):
        await session.execute(
            text(
                "UPDATE tasks SET status = :to, updated_at = now() "
                "WHERE job_id = :id AND status = ANY(:waiting)"
            ),
            {
                "id": job_id,
                "to": "cancelled" if target == "cancelled" else "pending",
                "waiting": ["pending", "held"] if target == "cancelled" else ["held"],
            },
        )
    return await get_job(session=session, job_id=job_id)


class BudgetTooLow(ValueError):
    """A budget below what the job has already spent and reserved."""


async def set_job_budget(*, session: AsyncSession, job_id: uuid.UUID, budget_usd: Decimal) -> Job:
    """Change a job's budget (PATCH); never below its spend plus in-flight reservations.

    InvalidTransition for a job that has ended (completed, cancelled, failed); an exhausted
    job keeps its status until it is resumed.
    """
    row = (
        await session.execute(
            text(
                "UPDATE jobs SET budget_usd = :b, updated_at = now() "
                "WHERE id = :id AND status <> ALL(:ended) "
                "AND spent_usd + reserved_usd <= :b RETURNING id"
            ),
            {"id": job_id, "b": money(budget_usd), "ended": ["completed", "cancelled", "failed"]},
        )
    ).first()
    if row is None:
        job = await get_job(session=session, job_id=job_id)
        if job.status in ("completed", "cancelled", "failed"):
            raise InvalidTransition(job_id, job.status, "change the budget of")
        raise BudgetTooLow(
            f"budget_usd must be at least {job.spent_usd + job.reserved_usd} "
            "(already spent plus reserved for calls in flight)"
        )
    return await get_job(session=session, job_id=job_id)


async def mark_budget_exhausted(*, session: AsyncSession, job_id: uuid.UUID) -> bool:
    """Stop a job whose budget cannot pay for another story; hold its waiting tasks."""
    row = (
        await session.execute(
            text(
                "UPDATE jobs SET status = 'budget_exhausted', updated_at = now(), "
                "finished_at = now(), last_error = 'budget exhausted: raise budget_usd "
                "(PATCH /v1/jobs/{id}) and resume the job to go on' "
                "WHERE id = :id AND status IN ('queued', 'running', 'paused') RETURNING id"
            ),
            {"id": job_id},
        )
    ).first()
    if row is None:
        return False
    await session.execute(
        text(
            "UPDATE tasks SET status = 'held', updated_at = now() "
            "WHERE job_id = :id AND status = 'pending'"
        ),
        {"id": job_id},
    )
    return True


async def pause_job(*, session: AsyncSession, job_id: uuid.UUID, reason: str) -> bool:
    """Pause a running job for a reason only a person can fix (e.g. a rejected API key)."""
    row = (
        await session.execute(
            text(
                "UPDATE jobs SET status = 'paused', updated_at = now(), last_error = :reason "
                "WHERE id = :id AND status IN ('queued', 'running') RETURNING id"
            ),
            {"id": job_id, "reason": reason},
        )
    ).first()
    return row is not None


@dataclass(frozen=True)
class JobRates:
    """Recent throughput of one job, from the per-minute rollups."""

    requests_per_minute: float
    tokens_per_minute: float
    stories_per_minute: float


async def job_rates(
    *, session: AsyncSession, job_ids: list[uuid.UUID], window_minutes: int = 5
) -> dict[uuid.UUID, JobRates]:
    """Average rates over the last `window_minutes` whole-or-partial minutes."""
    if not job_ids:
        return {}
    rows = await session.execute(
        text(
            "SELECT job_id, COALESCE(SUM(requests), 0), "
            "COALESCE(SUM(prompt_tokens + completion_tokens), 0), "
            "COALESCE(SUM(stories_accepted + stories_rejected + tasks_failed), 0), "
            "EXTRACT(EPOCH FROM (now() - MIN(minute))) "
            "FROM rollups_minute WHERE job_id = ANY(:ids) "
            "AND minute >= date_trunc('minute', now()) - make_interval(mins => :window) "
            "GROUP BY job_id"
        ),
        {"ids": job_ids, "window": window_minutes - 1},
    )
    rates: dict[uuid.UUID, JobRates] = {}
    for job_id, requests, tokens, stories, span_s in rows:
        minutes = max(float(span_s or 0.0), 1.0) / 60.0
        rates[job_id] = JobRates(
            requests_per_minute=float(requests) / minutes,
            tokens_per_minute=float(tokens) / minutes,
            stories_per_minute=float(stories) / minutes,
        )
    return rates


MONEY_STEP = Decimal("1e-9")  # numeric(.., 9) columns
# The smallest budget that is not 0 once stored: anything less would round away.
MIN_BUDGET_USD = float(MONEY_STEP)


def money(value: float | Decimal) -> Decimal:
    """USD as the exact decimal stored in Postgres (9 places)."""
    if isinstance(value, Decimal):
        return value.quantize(MONEY_STEP)
    return Decimal(repr(float(value))).quantize(MONEY_STEP)


async def rejections_by_reason(*, session: AsyncSession, job_id: uuid.UUID) -> dict[str, int]:
    """Rejected stories of a job by check name, from the rollups."""
    rows = await session.execute(
        text(
            "SELECT key, SUM(value::bigint) FROM rollups_minute, "
            "jsonb_each_text(rejections_by_reason) WHERE job_id = :id GROUP BY key"
        ),
        {"id": job_id},
    )
    return {key: int(total) for key, total in rows}
