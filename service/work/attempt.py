"""One attempt at a claimed task: budget waits and caps, auth pauses, cut-short calls charged."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from generator.errors import redact
from service import store
from service.store.queue import ClaimedTask
from service.work.shared_limits import (
    BudgetShort,
    BudgetWait,
    LeaseLost,
    TaskContext,
    current_task,
)
from service.work.task import SummaryFailed

logger = logging.getLogger(__name__)

Worker = Any  # service.work.worker.Worker (which imports this module)

# Provider error classes no retry can fix: the job pauses until a person fixes the key or
# adds credit to the account.
AUTH_CLASSES = ("auth", "permission", "quota")
# How long a worker leaves a job alone while in-flight reservations hold its budget.
BUDGET_WAIT_S = 0.5


async def run_task(worker: Worker, task: ClaimedTask) -> None:
    """Process one task and hand its result to the finisher; the slot stays taken until then."""
    ctx = TaskContext(
        job_id=task.job_id, task_id=task.id, worker_id=worker.worker_id, prepaid=task.prepaid
    )
    current_task.set(ctx)
    try:
        try:
            ctx.plan = _plan(worker, task)
            result = await _attempt(worker, task, ctx)
        except asyncio.CancelledError:
            # Shutdown past the grace period: give the task back, charging calls in flight.
            release = store.TaskResult(outcome="release", requests=_all_requests(worker, task, ctx))
            worker.finisher.submit(task, release)
            worker.stats.released += 1
            raise
        result.requests = _all_requests(worker, task, ctx)
        if result.error:
            result.error = redact(result.error)[:2000]
        status = await asyncio.shield(worker.finisher.submit(task, result))
        _count(worker, task, status, result)
    finally:
        worker.running.pop(task.id, None)
        worker.slot_freed.set()


def _plan(worker: Worker, task: ClaimedTask) -> tuple[float, Decimal, Decimal] | None:
    plan = getattr(worker.processor, "plan", None)
    if plan is None:
        return None
    try:
        return plan(task)
    except Exception:  # e.g. an unpriced model: the engine reports it on the request
        return None


def _all_requests(worker: Worker, task: ClaimedTask, ctx: TaskContext) -> list[Any]:
    return list(ctx.requests) + ctx.unreconciled(model=task.model, provider=worker.provider_name)


async def _attempt(worker: Worker, task: ClaimedTask, ctx: TaskContext) -> store.TaskResult:
    cap: int | None = None
    for _ in range(4):
        try:
            result = await worker.processor.process(task, max_tokens=cap)
        except BudgetWait:
            worker.budget_waits[task.job_id] = asyncio.get_running_loop().time() + BUDGET_WAIT_S
            return store.TaskResult(outcome="release")
        except BudgetShort as exc:
            decision, cap = await _budget_short(worker, task, ctx, exc.usd)
            if decision == "cap":
                continue
            return store.TaskResult(outcome="release")
        except SummaryFailed as exc:
            return store.TaskResult(outcome="retry", error=str(exc))
        except LeaseLost as exc:
            # finish_tasks sees the lost lease: it records the requests, stores nothing.
            return store.TaskResult(outcome="retry", error=str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("task crashed task_id=%d", task.id)
            return store.TaskResult(outcome="retry", error=f"{type(exc).__name__}: {exc}")
        if result.error_class in AUTH_CLASSES:
            await _pause_for_auth(worker, task, result)
            result.outcome = "release"
        return result
    return store.TaskResult(outcome="release")


async def _budget_short(
    worker: Worker, task: ClaimedTask, ctx: TaskContext, usd: Decimal
) -> tuple[str, int | None]:
    """The job's budget cannot pay this call's worst case: ask for fewer tokens, wait for
    in-flight reservations, or (nothing in flight, not even a short story affordable) stop.

    From here on this worker prepays nothing for the job: tasks prepaid together and each
    waiting for the others' reservations to go would give each other back forever.
    """
    worker.tight_jobs.add(task.job_id)
    room = await worker.db(
        "budget_room", lambda s: store.budget.budget_room(session=s, job_id=task.job_id)
    )
    if room.reserved_usd - ctx.prepaid > 0:
        # Reservations of calls in flight (or of this task's answered calls, freed when it
        # finishes) stand in the way: give the task back and try again shortly.
        worker.budget_waits[task.job_id] = asyncio.get_running_loop().time() + BUDGET_WAIT_S
        return "wait", None
    # Nothing else is out: the last stories go one call at a time, max_tokens capped by what
    # is left (paid from the prepaid reservation, or on top of it).
    left = max(ctx.prepaid, room.idle_usd - ctx.prepaid)
    tokens, least = worker.processor.affordable_tokens(task, float(left))
    if tokens >= least:
        return "cap", tokens

    async def stop(session: AsyncSession) -> bool:
        return await store.mark_budget_exhausted(session=session, job_id=task.job_id)

    if await worker.db("budget_stop", stop):
        logger.warning(
            "job budget exhausted job_id=%s left_usd=%s needs_usd=%s",
            task.job_id,
            room.idle_usd,
            usd,
        )
    return "stop", None


async def _pause_for_auth(worker: Worker, task: ClaimedTask, result: store.TaskResult) -> None:
    """A 401/403 or an empty account: no retry can help, pause the job with a clear reason."""
    said = redact(result.error or "")[:500]
    if result.error_class == "quota":
        reason = (
            f"paused: the provider says the account is out of credit (quota): {said}. Add "
            "credit or raise the account's limit, then resume the job."
        )
    else:
        reason = (
            f"paused: the provider refused the API key ({result.error_class}): {said}. Fix the "
            "key (OPENAI_API_KEY), restart the workers, then resume the job."
        )

    async def pause(session: AsyncSession) -> bool:
        return await store.jobs.pause_job(session=session, job_id=task.job_id, reason=reason)

    if await worker.db("auth_pause", pause):
        logger.error("job paused job_id=%s reason=%s", task.job_id, reason)


def _count(worker: Worker, task: ClaimedTask, status: str, result: store.TaskResult) -> None:
    stats = worker.stats
    if status == "done":
        stats.stories += 1
    elif status == "failed":
        stats.failed += 1
        logger.warning(
            "task failed task_id=%d job_id=%s error=%s", task.id, task.job_id, result.error
        )
    elif status == "lost":
        stats.lost += 1
        logger.warning("task lease lost task_id=%d", task.id)
    elif result.outcome != "release":
        stats.retried += 1
