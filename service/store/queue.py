"""The task queue: claim under a lease, extend leases, reap expired ones, release."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.models import RequestRow
from service.store.rollups import RollupBatch, rollup_statements
from service.store.task_plan import make_tasks_if_short, plan_task, save_plans
from service.store.vocabularies import vocabularies_by_sha

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
    # The job's mean completion tokens per story so far (None until enough stories to tell).
    mean_completion: float | None = None
    # The job's own prices ({model: {"input": usd_per_1m, "output": usd_per_1m}}), if any.
    prices: dict[str, Any] | None = None
    # The job's custom vocabulary (a vocab.Vocabulary: recipes came from it, stories are
    # checked against it); None: the packaged default.
    vocabulary: Any = None


# Stories a job makes before its mean completion length sizes its reservations.
LEARN_AFTER_STORIES = 5

# Where a task goes when it goes back to the queue: a task of an ended job is closed, not left
# pending (`held` tasks of a budget-exhausted job return to pending when it resumes).
RETURN_STATUS = (
    "(CASE j.status WHEN 'cancelled' THEN 'cancelled' WHEN 'budget_exhausted' THEN 'held' "
    "ELSE 'pending' END)"
)

# Jobs first, then each job's tasks in id order through the partial (job_id, id) index: a claim
# reads about `limit` index entries, not every pending task (a sort over all pending tasks of a
# million-story job per claim).
_RUNNABLE_JOBS = text(
    "SELECT id, tasks_made < n_stories FROM jobs j WHERE status IN ('queued', 'running') "
    "AND (tasks_made < n_stories "
    "     OR EXISTS (SELECT 1 FROM tasks t WHERE t.job_id = j.id AND t.status = 'pending')) "
    "AND id <> ALL(CAST(:skip AS uuid[])) AND mode = :mode "
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
              j.instruct, j.summary_model, j.max_tokens, j.seed,
              CASE WHEN j.completed + j.rejected >= :learn_after
                   THEN j.completion_tokens::float8 / (j.completed + j.rejected) END,
              j.feature_probs, j.models, j.prices, j.vocabulary ->> 'sha256'
    """
)


def _with_plan(row: Any, vocabulary: Any) -> tuple[ClaimedTask, bool]:
    """The claimed task, its recipe and model derived when the database left them NULL."""
    values = list(row[:-5])
    mean_completion, feature_probs, models, prices, _ = row[-5:]
    planned = values[3] is None or values[4] is None
    if planned:
        recipe, model = plan_task(
            seed=values[10],
            index=values[2],
            feature_probs=feature_probs,
            models=models,
            vocabulary=vocabulary,
        )
        values[3] = values[3] if values[3] is not None else recipe
        values[4] = values[4] if values[4] is not None else model
    task = ClaimedTask(
        *values, mean_completion=mean_completion, prices=prices, vocabulary=vocabulary
    )
    return task, planned


async def claim_tasks(
    *,
    session: AsyncSession,
    worker_id: str,
    limit: int,
    lease_s: float,
    skip_jobs: list[uuid.UUID] | None = None,
    mode: str = "online",
) -> list[ClaimedTask]:
    """Lease up to `limit` pending tasks of runnable jobs, highest priority first.

    `skip_jobs`: jobs this worker leaves alone for now (waiting for in-flight budget).
    `mode`: online workers take online jobs; the batch runner takes batch jobs.
    """
    claimed: list[ClaimedTask] = []
    jobs = await session.execute(_RUNNABLE_JOBS, {"skip": list(skip_jobs or []), "mode": mode})
    for job_id, unmade in jobs.all():
        params = {
            "job_id": job_id,
            "worker_id": worker_id,
            "limit": limit - len(claimed),
            "lease_s": lease_s,
            "learn_after": LEARN_AFTER_STORIES,
        }
        # Make tasks first when too few are pending (see make_tasks_if_short on lock order).
        if unmade:
            await make_tasks_if_short(session=session, job_id=job_id, wanted=params["limit"])
        rows = (await session.execute(_CLAIM, params)).all()
        sha = rows[0][-1] if rows else None  # one job: one vocabulary
        vocabulary = (await vocabularies_by_sha(session=session, shas=[sha])).get(sha or "")
        made = [_with_plan(row, vocabulary) for row in rows]
        await save_plans(
            session=session, plans=[(t.id, t.recipe, t.model) for t, planned in made if planned]
        )
        claimed += sorted((task for task, _ in made), key=lambda task: task.id)
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


# Leases of dead workers return at once: a worker whose heartbeat is `dead_after_s` old (or
# whose row says it stopped) holds nothing any more, whatever its leases say. Its row is marked
# `dead` for the dashboard; a heartbeat (a worker that was only slow) marks it running again.
_REAP = text(
    """
    WITH dead AS (
        UPDATE workers SET status = 'dead'
        WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => :dead_after_s)
        RETURNING id
    ), expired AS (
        SELECT t.id, t.reserved_usd FROM tasks t
        WHERE t.status = 'running' AND (
            t.lease_expires_at < now()
            OR t.lease_owner IN (
                SELECT id FROM workers WHERE status = 'stopped'
                OR heartbeat_at < now() - make_interval(secs => :dead_after_s)))
        ORDER BY t.lease_expires_at
        LIMIT :limit
        FOR UPDATE OF t SKIP LOCKED
    )
    UPDATE tasks t
    SET status = CASE WHEN t.attempts >= :max_attempts THEN 'failed'
                      ELSE """
    + RETURN_STATUS
    + """ END,
        last_error = CASE WHEN t.attempts >= :max_attempts
            THEN COALESCE(t.last_error, 'lease expired') ELSE t.last_error END,
        lease_owner = NULL, lease_expires_at = NULL, reserved_usd = 0, updated_at = now()
    FROM expired e, jobs j WHERE t.id = e.id AND j.id = t.job_id
    RETURNING t.id, t.job_id, t.model, t.status, t.attempts, e.reserved_usd, j.provider
    """
)

# The reaped tasks' counters: their unreconciled reservations become spend (see reap_expired).
_REAP_JOB = text(
    """
    UPDATE jobs j
    SET spent_usd = j.spent_usd + :charged,
        reserved_usd = GREATEST(j.reserved_usd - :charged, 0),
        n_requests = j.n_requests + :n_requests,
        failed = j.failed + :failed,
        status = CASE
            WHEN j.status IN ('queued', 'running')
                 AND j.completed + j.rejected + j.failed + :failed >= j.n_stories
            THEN CASE WHEN j.completed + j.rejected = 0 THEN 'failed' ELSE 'completed' END
            ELSE j.status END,
        finished_at = CASE
            WHEN j.completed + j.rejected + j.failed + :failed >= j.n_stories
                 AND j.finished_at IS NULL
            THEN now() ELSE j.finished_at END,
        updated_at = now()
    WHERE j.id = :job_id
    """
)

# Error class of the request row that charges a dead attempt's unreconciled reservation.
UNRECONCILED = "unreconciled"


def intent_row(
    *, job_id: uuid.UUID, task_id: int, model: str, provider: str, attempt: int, usd: Decimal
) -> dict[str, Any]:
    """A `requests` row for provider calls that may have been billed but never answered us:
    charged at the worst case that was reserved for them."""
    return {
        "job_id": job_id,
        "task_id": task_id,
        "kind": "story",
        "model": model,
        "provider": provider,
        "outcome": "error",
        "error_class": UNRECONCILED,
        "status": None,
        "attempt": attempt,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cost_usd": usd,
        "latency_s": 0.0,
        "finish_reason": None,
        "created_at": datetime.now(UTC),
    }


async def reap_expired(
    *, session: AsyncSession, max_attempts: int, limit: int = 1000, dead_after_s: float = 30.0
) -> tuple[int, int] | None:
    """Return the tasks of expired leases and dead workers to the queue (or fail them).

    None when another reaper runs (a transaction-scoped advisory lock, released at the caller's
    commit). What such a task still had reserved paid for calls the provider may have answered
    (and billed) after the worker died: it is charged, as an `unreconciled` request row, never
    handed back, so recorded spend is never below the provider's.
    """
    got = (
        await session.execute(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": REAPER_LOCK_KEY}
        )
    ).scalar_one()
    if not got:
        return None
    rows = (
        await session.execute(
            _REAP,
            {"limit": limit, "max_attempts": max_attempts, "dead_after_s": dead_after_s},
        )
    ).all()
    if not rows:
        return 0, 0
    intents: list[dict[str, Any]] = []
    batch = RollupBatch()
    per_job: dict[uuid.UUID, list[Any]] = {}
    for task_id, job_id, model, status, attempts, reserved, provider in rows:
        charged, n_requests, failed = per_job.setdefault(job_id, [Decimal(0), 0, 0])
        usd = Decimal(reserved)
        if usd > 0:
            intents.append(
                intent_row(
                    job_id=job_id,
                    task_id=task_id,
                    model=model,
                    provider=provider,
                    attempt=attempts,
                    usd=usd,
                )
            )
            batch.add_request(
                job_id=job_id,
                model=model,
                started_at=None,
                outcome="error",
                error_class=UNRECONCILED,
                status=None,
                attempt=attempts,
                prompt_tokens=0,
                completion_tokens=0,
                cost_usd=usd,
                latency_s=0.0,
            )
        if status == "failed":
            batch.add_story(job_id=job_id, model=model, accepted=None)
        per_job[job_id] = [charged + usd, n_requests + (usd > 0), failed + (status == "failed")]
    if intents:
        await session.execute(insert(RequestRow), intents)
    for stmt, params in rollup_statements(batch):
        await session.execute(stmt, params)
    for job_id in sorted(per_job, key=str):
        charged, n_requests, failed = per_job[job_id]
        await session.execute(
            _REAP_JOB,
            {"job_id": job_id, "charged": charged, "n_requests": n_requests, "failed": failed},
        )
    returned = sum(1 for row in rows if row[3] != "failed")
    return returned, len(rows) - returned


async def release_tasks(
    *, session: AsyncSession, worker_id: str, task_ids: list[int], refund_attempt: bool = True
) -> int:
    """Give tasks this worker holds back to the queue, with their budget and (by default) attempt.

    Only for tasks none of whose provider calls can be in flight (never started, or waiting
    for budget): a task whose calls may have been sent ends through finish_tasks, which
    charges what was not reconciled.
    """
    if not task_ids:
        return 0
    result = await session.execute(
        text(
            """
            WITH released AS (
                UPDATE tasks t
                SET status = """
            + RETURN_STATUS
            + """,
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
