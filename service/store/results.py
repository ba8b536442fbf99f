"""Finishing tasks: stories, task states, request rows, rollups and job counters together.

Many finished tasks go in one transaction (group commit): one statement per table instead of
one transaction per story, which is what lets several workers share one job row.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.dataset.minhash import text_hash
from service.db import execute_and_commit
from service.store.jobs import money
from service.store.models import RequestRow, Story
from service.store.queue import RETURN_STATUS, UNRECONCILED, ClaimedTask
from service.store.rollups import RollupBatch, rollup_statements


@dataclass
class TaskResult:
    """How one attempt at a task ended.

    outcome: "story" (a story to store, accepted or not), "retry" (try again unless the
    attempts are used up), "fail" (give up now), "release" (back to the queue, attempt
    refunded: the worker stopped).
    """

    outcome: Literal["story", "retry", "fail", "release"]
    requests: Sequence[Any] = ()
    story: dict[str, Any] | None = None
    error: str | None = None
    error_class: str | None = None  # the provider's error class when a call failed (not stored)


# Only tasks this worker still holds change; the returned rows say which did. "release" gives
# the task back with its attempt refunded (shutdown: the attempt was cut short, not failed).
_TASKS_DONE = text(
    """
    UPDATE tasks t SET
        status = CASE
            WHEN u.outcome = 'story' THEN 'done'
            WHEN u.outcome = 'release' THEN """
    + RETURN_STATUS
    + """
            WHEN u.outcome = 'fail' OR t.attempts >= :max_attempts THEN 'failed'
            ELSE """
    + RETURN_STATUS
    + """ END,
        attempts = GREATEST(t.attempts - CASE WHEN u.outcome = 'release' THEN 1 ELSE 0 END, 0),
        last_error = u.error, lease_owner = NULL,
        lease_expires_at = NULL, reserved_usd = 0, updated_at = now()
    FROM unnest(CAST(:ids AS bigint[]), CAST(:outcomes AS text[]), CAST(:errors AS text[]))
            AS u(id, outcome, error),
         (SELECT id, reserved_usd FROM tasks WHERE id = ANY(:ids) ORDER BY id FOR UPDATE) old,
         jobs j
    WHERE t.id = u.id AND old.id = u.id AND j.id = t.job_id
      AND t.lease_owner = :worker_id AND t.status = 'running'
    RETURNING t.id, t.status, old.reserved_usd
    """
)

_JOB_UPDATE = text(
    """
    UPDATE jobs SET
        spent_usd = spent_usd + :cost,
        reserved_usd = GREATEST(reserved_usd - :released, 0),
        n_requests = n_requests + :n_requests,
        prompt_tokens = prompt_tokens + :prompt_tokens,
        completion_tokens = completion_tokens + :completion_tokens,
        completed = completed + :accepted,
        rejected = rejected + :rejected,
        failed = failed + :failed,
        last_error = COALESCE(:error, last_error),
        status = CASE
            WHEN status IN ('queued', 'running')
                 AND completed + rejected + failed + :accepted + :rejected + :failed >= n_stories
            THEN CASE WHEN completed + rejected + :accepted + :rejected = 0
                      THEN 'failed' ELSE 'completed' END
            ELSE status END,
        finished_at = CASE
            WHEN finished_at IS NULL
                 AND completed + rejected + failed + :accepted + :rejected + :failed >= n_stories
            THEN now() ELSE finished_at END,
        updated_at = now()
    WHERE id = :job_id
    """
)


# The charges a reaper made for attempts whose worker turns out to be alive (it reports the
# attempt's real requests): they are replaced, not added to.
_UNCHARGE = text(
    """
    DELETE FROM requests r
    USING unnest(CAST(:ids AS bigint[]), CAST(:attempts AS integer[]),
                 CAST(:job_ids AS uuid[])) AS u(id, attempt, job_id)
    WHERE r.job_id = u.job_id AND r.task_id = u.id AND r.attempt = u.attempt
      AND r.error_class = '"""
    + UNRECONCILED
    + """'
    RETURNING r.job_id, r.model, r.cost_usd
    """
)


def request_rows(task: ClaimedTask, requests: Sequence[Any]) -> list[dict[str, Any]]:
    """RequestRecord objects as `requests` rows."""
    return [
        {
            "job_id": task.job_id,
            "task_id": task.id,
            "kind": r.kind,
            "model": r.model,
            "provider": r.provider,
            "outcome": r.outcome,
            "error_class": r.error_class,
            "status": r.status,
            "attempt": r.attempt,
            "prompt_tokens": r.prompt_tokens or 0,
            "completion_tokens": r.completion_tokens or 0,
            "cost_usd": money(r.cost_usd or 0.0),
            "latency_s": float(r.latency_s or 0.0),
            "finish_reason": r.finish_reason,
            "created_at": r.started_at,
        }
        for r in requests
    ]


@dataclass
class _JobDelta:
    cost: Decimal = Decimal(0)
    released: Decimal = Decimal(0)
    n_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


async def finish_tasks(
    *,
    session: AsyncSession,
    items: Sequence[tuple[ClaimedTask, TaskResult]],
    worker_id: str,
    max_attempts: int,
    commit: bool = False,
    rollups: bool = True,
) -> list[str]:
    """Record the end of many attempts; returns each task's new status, or "lost".

    Requests are always recorded (they were paid for). A story is stored only while this worker
    still holds the lease, and the unique task_id on stories keeps it to one per task.
    `commit`: end the transaction here, the shared rows' updates sent with the COMMIT
    (db.execute_and_commit), so they are locked for one round trip instead of three.
    """
    if not items:
        return []
    rows = (
        await session.execute(
            _TASKS_DONE,
            {
                "ids": [task.id for task, _ in items],
                "outcomes": [result.outcome for _, result in items],
                "errors": [result.error for _, result in items],
                "max_attempts": max_attempts,
                "worker_id": worker_id,
            },
        )
    ).all()
    new_status = {task_id: (status, Decimal(reserved)) for task_id, status, reserved in rows}

    request_params: list[dict[str, Any]] = []
    story_params: list[dict[str, Any]] = []
    batch = RollupBatch()
    deltas: dict[uuid.UUID, _JobDelta] = {}
    statuses: list[str] = []
    for task, result in items:
        status, released = new_status.get(task.id, ("lost", Decimal(0)))
        statuses.append(status)
        delta = deltas.setdefault(task.job_id, _JobDelta())
        delta.released += released
        reqs = request_rows(task, result.requests)
        request_params += reqs
        for r in reqs:
            delta.cost += r["cost_usd"]
            delta.n_requests += 1
            delta.prompt_tokens += r["prompt_tokens"]
            delta.completion_tokens += r["completion_tokens"]
            batch.add_request(
                job_id=task.job_id,
                model=r["model"],
                started_at=r["created_at"],
                outcome=r["outcome"],
                error_class=r["error_class"],
                status=r["status"],
                attempt=r["attempt"],
                prompt_tokens=r["prompt_tokens"],
                completion_tokens=r["completion_tokens"],
                cost_usd=r["cost_usd"],
                latency_s=r["latency_s"],
            )
        if status == "done" and result.story is not None:
            story = dict(result.story, task_id=task.id, job_id=task.job_id)
            story.setdefault("text_hash", text_hash(story["text"]))
            story_params.append(story)
            if story["accepted"]:
                delta.accepted += 1
            else:
                delta.rejected += 1
            batch.add_story(
                job_id=task.job_id,
                model=story.get("model") or task.model,
                accepted=bool(story["accepted"]),
                reasons=story.get("rejection_reasons") or (),
            )
        elif status == "failed":
            delta.failed += 1
            delta.errors.append(result.error or "failed")
            batch.add_story(job_id=task.job_id, model=task.model, accepted=None)

    late = [
        (task, result)
        for (task, result), status in zip(items, statuses, strict=True)
        if status == "lost" and result.requests
    ]
    if late:  # a reaper took this attempt for dead and charged its reservation: reconcile
        for job_id, model, cost in await session.execute(
            _UNCHARGE,
            {
                "ids": [t.id for t, _ in late],
                "attempts": [t.attempts for t, _ in late],
                "job_ids": [t.job_id for t, _ in late],
            },
        ):
            delta = deltas.setdefault(job_id, _JobDelta())
            delta.cost -= Decimal(cost)
            delta.n_requests -= 1
            batch.remove_charge(
                job_id=job_id, model=model, error_class=UNRECONCILED, cost_usd=Decimal(cost)
            )
    if story_params:  # near-duplicate checks follow, by the indexer (service.dataset.dedup)
        await _insert_stories(session, story_params)
    if request_params:
        await session.execute(insert(RequestRow), request_params)
    # Lock order everywhere: tasks, then rollup rows, then job rows (sorted by id).
    tail = rollup_statements(batch) if rollups else []  # off: measuring what they cost
    for job_id in sorted(deltas, key=str):
        d = deltas[job_id]
        tail.append(
            (
                _JOB_UPDATE,
                {
                    "job_id": job_id,
                    "cost": d.cost,
                    "released": d.released,
                    "n_requests": d.n_requests,
                    "prompt_tokens": d.prompt_tokens,
                    "completion_tokens": d.completion_tokens,
                    "accepted": d.accepted,
                    "rejected": d.rejected,
                    "failed": d.failed,
                    "error": d.errors[-1] if d.errors else None,
                },
            )
        )
    returned = [task.id for task, _ in items if new_status.get(task.id, ("",))[0] == "pending"]
    if returned:
        # After the job rows (their locks wait for a concurrent budget stop to commit): a task
        # returned while its job ran out of budget is held, not left pending.
        tail.append((_HOLD_RETURNED, {"ids": returned}))
    if commit:
        await execute_and_commit(session, tail)
    else:
        for stmt, params in tail:
            await session.execute(stmt, params)
    return statuses


_HOLD_RETURNED = text(
    "UPDATE tasks t SET status = 'held', updated_at = now() FROM jobs j "
    "WHERE t.id = ANY(:ids) AND t.status = 'pending' AND j.id = t.job_id "
    "AND j.status = 'budget_exhausted'"
)


async def _insert_stories(session: AsyncSession, stories: list[dict[str, Any]]) -> None:
    """Insert stories; rows may name different columns, so group them by their keys."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for story in stories:
        groups.setdefault(tuple(sorted(story)), []).append(story)
    for group in groups.values():
        await session.execute(insert(Story), group)


async def finish_task(
    *,
    session: AsyncSession,
    task: ClaimedTask,
    worker_id: str,
    result: TaskResult,
    max_attempts: int,
) -> str:
    """One task's end (see finish_tasks)."""
    (status,) = await finish_tasks(
        session=session, items=[(task, result)], worker_id=worker_id, max_attempts=max_attempts
    )
    return status
