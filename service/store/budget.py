"""Shared budgets: per-model token buckets (RPM/TPM) and per-job cost reservations."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def ensure_buckets(
    *, session: AsyncSession, limits: dict[str, tuple[int | None, int | None]], burst_s: float
) -> None:
    """Create or update each model's bucket row with its configured limits."""
    for model, (rpm, tpm) in limits.items():
        await session.execute(
            text(
                "INSERT INTO rate_buckets (model, rpm, tpm, req_avail, tok_avail, updated_at) "
                "VALUES (:model, :rpm, :tpm, :r0, :t0, clock_timestamp()) "
                "ON CONFLICT (model) DO UPDATE SET rpm = EXCLUDED.rpm, tpm = EXCLUDED.tpm"
            ),
            {
                "model": model,
                "rpm": rpm,
                "tpm": tpm,
                "r0": (rpm or 0) * burst_s / 60.0,
                "t0": (tpm or 0) * burst_s / 60.0,
            },
        )


@dataclass(frozen=True)
class Grant:
    """Capacity taken from a shared bucket, usable after `wait_s`; none while the model is
    blocked (then `wait_s` is how long it stays blocked)."""

    requests: int
    tokens: float
    wait_s: float


# Refill, cap at `burst_s` seconds of capacity, and take a lease, all in one row-locked
# statement, so concurrent processes never double-spend the bucket. The lease is taken even when
# the bucket holds less (it goes negative) and is used only once refill has paid for it: every
# poll yields capacity, processes queue in poll order instead of polling an empty bucket at the
# same moments, and sends still never outrun burst plus refill.
_TAKE = text(
    """
    WITH cur AS (
        SELECT model, rpm, tpm, blocked_until,
            CASE WHEN rpm IS NULL THEN :want_r
                 ELSE LEAST(:want_r, floor(GREATEST(1.0, rpm * :burst_s / 60.0))) END AS take_r,
            LEAST(GREATEST(1.0, rpm * :burst_s / 60.0), req_avail + rpm / 60.0
                  * EXTRACT(EPOCH FROM clock_timestamp() - updated_at)) AS r,
            LEAST(COALESCE(tpm, 0) * :burst_s / 60.0, tok_avail + COALESCE(tpm, 0) / 60.0
                  * EXTRACT(EPOCH FROM clock_timestamp() - updated_at)) AS t
        FROM rate_buckets WHERE model = :model FOR UPDATE
    ), g AS (
        SELECT model, rpm, tpm, r, t, take_r,
            CASE WHEN (blocked_until IS NULL OR blocked_until <= clock_timestamp())
                      AND (rpm IS NULL OR rpm > 0) AND (tpm IS NULL OR tpm > 0)
                 THEN 1 ELSE 0 END AS ok,
            GREATEST(EXTRACT(EPOCH FROM blocked_until - clock_timestamp()), 0) AS blocked_s
        FROM cur
    )
    UPDATE rate_buckets b SET
        req_avail = CASE WHEN g.rpm IS NULL THEN 0 ELSE g.r - g.ok * g.take_r END,
        tok_avail = CASE WHEN g.tpm IS NULL THEN 0 ELSE g.t - g.ok * :want_t END,
        updated_at = clock_timestamp()
    FROM g WHERE b.model = g.model
    RETURNING g.ok, g.take_r, g.rpm, g.tpm,
        g.r - g.ok * g.take_r, g.t - g.ok * :want_t, g.blocked_s
    """
)


async def take_rate_capacity(
    *,
    session: AsyncSession,
    model: str,
    want_requests: int,
    want_tokens: float,
) -> Grant | None:
    """Take a lease of `want_*` (requests capped at one burst) from the model's bucket; None
    when the model has no bucket."""
    row = (
        await session.execute(
            _TAKE,
            {
                "model": model,
                "want_r": want_requests,
                "want_t": float(want_tokens),
                "burst_s": _BURST_S,
            },
        )
    ).first()
    if row is None:
        return None
    ok, got_r, rpm, tpm, left_r, left_t, blocked_s = row
    if not ok:  # blocked after a 429, or a zero limit that never refills: poll slowly
        never = rpm == 0 or tpm == 0
        return Grant(requests=0, tokens=0.0, wait_s=max(float(blocked_s or 0.0), float(never)))
    waits = [0.0]
    if rpm:
        waits.append(-float(left_r) * 60.0 / rpm)
    if tpm:
        waits.append(-float(left_t) * 60.0 / tpm)
    return Grant(requests=int(got_r), tokens=float(want_tokens), wait_s=max(waits))


# Seconds of capacity a bucket can hold: small, so a burst never exceeds a sliding-minute limit
# by more than one second's worth of requests.
_BURST_S = 1.0


async def block_model(*, session: AsyncSession, model: str, seconds: float) -> None:
    """After a 429 with Retry-After: nobody sends to this model for `seconds`."""
    await session.execute(
        text(
            "UPDATE rate_buckets SET blocked_until = GREATEST(COALESCE(blocked_until, "
            "clock_timestamp()), clock_timestamp() + make_interval(secs => :s)), "
            "req_avail = LEAST(req_avail, 0) WHERE model = :model"
        ),
        {"model": model, "s": seconds},
    )


async def reserve_budget(
    *,
    session: AsyncSession,
    job_id: uuid.UUID,
    task_id: int,
    worker_id: str,
    usd: Decimal,
    factor: Decimal = Decimal(1),
) -> str:
    """Reserve `usd` of the job's budget for one request of a task this worker holds.

    `factor`: the call's worst case over `usd` (a reservation near the expected cost, see
    service.work.task): it goes only while the spend plus every reservation at that factor
    stays within the budget, so the provider's bill never exceeds it.

    Returns "ok"; "wait" when only other tasks' in-flight reservations are in the way (they
    come back, less what their calls cost); "exhausted" when what is left after the job's
    spend and this task's own reservations cannot pay for it; "lost" when the lease is gone.
    """
    row = (
        await session.execute(
            text(
                """
                WITH t AS (
                    SELECT id, reserved_usd FROM tasks
                    WHERE id = :task_id AND lease_owner = :worker_id AND status = 'running'
                    FOR UPDATE
                ), j AS (
                    UPDATE jobs SET reserved_usd = reserved_usd + :usd
                    WHERE id = :job_id AND EXISTS (SELECT 1 FROM t)
                        AND spent_usd + (reserved_usd + :usd) * :factor <= budget_usd
                    RETURNING id
                ), u AS (
                    UPDATE tasks SET reserved_usd = reserved_usd + :usd
                    WHERE id = :task_id AND EXISTS (SELECT 1 FROM j)
                    RETURNING id
                )
                SELECT EXISTS (SELECT 1 FROM t), EXISTS (SELECT 1 FROM u),
                       (SELECT budget_usd - spent_usd - (SELECT reserved_usd FROM t)
                        FROM jobs WHERE id = :job_id)
                """
            ),
            {
                "usd": usd,
                "factor": factor,
                "job_id": job_id,
                "task_id": task_id,
                "worker_id": worker_id,
            },
        )
    ).one()
    held, reserved, room_if_alone = row
    if not held:
        return "lost"
    if reserved:
        return "ok"
    alone = room_if_alone is not None and room_if_alone >= usd * factor
    return "wait" if alone else "exhausted"


@dataclass(frozen=True)
class BudgetRoom:
    """What a job's budget has left: now, and once its in-flight reservations come back."""

    now_usd: Decimal
    idle_usd: Decimal
    reserved_usd: Decimal


async def budget_room(*, session: AsyncSession, job_id: uuid.UUID) -> BudgetRoom:
    """The job's unreserved budget (0 for an unknown job)."""
    row = (
        await session.execute(
            text(
                "SELECT budget_usd - spent_usd - reserved_usd, budget_usd - spent_usd, "
                "reserved_usd FROM jobs WHERE id = :id"
            ),
            {"id": job_id},
        )
    ).first()
    if row is None:
        return BudgetRoom(Decimal(0), Decimal(0), Decimal(0))
    return BudgetRoom(*(Decimal(v) for v in row))


async def release_task_budget(*, session: AsyncSession, job_id: uuid.UUID, task_id: int) -> Decimal:
    """Hand back everything a task still has reserved."""
    row = (
        await session.execute(
            text(
                """
                WITH old AS (SELECT id, reserved_usd FROM tasks WHERE id = :task_id FOR UPDATE),
                t AS (UPDATE tasks SET reserved_usd = 0 FROM old WHERE tasks.id = old.id
                      RETURNING old.reserved_usd AS amount)
                UPDATE jobs SET reserved_usd = GREATEST(reserved_usd - (SELECT amount FROM t), 0)
                WHERE id = :job_id AND EXISTS (SELECT 1 FROM t)
                RETURNING (SELECT amount FROM t)
                """
            ),
            {"task_id": task_id, "job_id": job_id},
        )
    ).first()
    return Decimal(row[0]) if row else Decimal(0)


# Reserve the first request of each task a worker just claimed: the job row is locked once per
# claim batch instead of once per request. Per job, tasks are covered in id order
# while the budget has room; the rest get nothing and reserve per request as usual.
# NO KEY UPDATE: the foreign-key checks of rows other workers are inserting hold KEY SHARE
# on the job row until they commit, and a plain FOR UPDATE would queue behind them.
_PREPAY = text(
    """
    WITH held AS (
        SELECT id FROM tasks
        WHERE id = ANY(CAST(:task_ids AS bigint[])) AND lease_owner = :worker_id
          AND status = 'running'
        ORDER BY id FOR UPDATE
    ), want AS (
        SELECT u.task_id, u.job_id, u.usd, u.factor,
               SUM(u.usd) OVER (PARTITION BY u.job_id ORDER BY u.task_id) AS running
        FROM unnest(CAST(:task_ids AS bigint[]), CAST(:job_ids AS uuid[]),
                    CAST(:usd AS numeric[]), CAST(:factors AS numeric[]))
             AS u(task_id, job_id, usd, factor)
        JOIN held ON held.id = u.task_id
    ), room AS (
        SELECT id, budget_usd - spent_usd AS left_usd, reserved_usd FROM jobs
        WHERE id = ANY(CAST(:job_ids AS uuid[])) ORDER BY id FOR NO KEY UPDATE
    ), ok AS (
        SELECT want.task_id, want.job_id, want.usd FROM want JOIN room ON room.id = want.job_id
        WHERE (room.reserved_usd + want.running) * want.factor <= room.left_usd
          AND want.usd > 0
    ), t AS (
        UPDATE tasks SET reserved_usd = tasks.reserved_usd + ok.usd
        FROM ok WHERE tasks.id = ok.task_id
    ), j AS (
        UPDATE jobs SET reserved_usd = jobs.reserved_usd + s.total
        FROM (SELECT job_id, SUM(usd) AS total FROM ok GROUP BY job_id) s
        WHERE jobs.id = s.job_id
    )
    SELECT task_id, usd FROM ok
    """
)


async def prepay_tasks(
    *,
    session: AsyncSession,
    worker_id: str,
    amounts: list[tuple[int, uuid.UUID, Decimal]] | list[tuple[int, uuid.UUID, Decimal, Decimal]],
) -> dict[int, Decimal]:
    """Reserve (task id, job id, usd[, factor]) amounts of tasks `worker_id` holds (`factor`:
    see reserve_budget; 1 when left out).

    Returns what each covered task got; a task missing from the result got nothing.
    """
    if not amounts:
        return {}
    rows = await session.execute(
        _PREPAY,
        {
            "task_ids": [a[0] for a in amounts],
            "job_ids": [a[1] for a in amounts],
            "usd": [a[2] for a in amounts],
            "factors": [a[3] if len(a) > 3 else Decimal(1) for a in amounts],
            "worker_id": worker_id,
        },
    )
    return {int(task_id): Decimal(usd) for task_id, usd in rows}
