"""Per-minute rollups: one upsert per finished unit of work; the dashboard reads only these."""

from __future__ import annotations

import json
import uuid
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.models import LATENCY_BUCKETS_S, LATENCY_COLUMNS


@dataclass
class RollupDelta:
    """What one unit of work adds to one (minute, model, job) row."""

    requests: int = 0
    errors: int = 0
    rate_limited: int = 0
    retries: int = 0
    errors_by_class: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    stories_accepted: int = 0
    stories_rejected: int = 0
    tasks_failed: int = 0
    duplicates: int = 0
    exact_duplicates: int = 0
    rejections_by_reason: dict[str, int] = field(default_factory=dict)
    latency_sum_s: float = 0.0
    latency: list[int] = field(default_factory=lambda: [0] * len(LATENCY_COLUMNS))


def minute_of(moment: datetime | None) -> datetime:
    """The UTC minute a moment falls in."""
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.replace(second=0, microsecond=0)


def latency_bucket(latency_s: float) -> int:
    """Index of the histogram column a latency belongs to."""
    return bisect_left(LATENCY_BUCKETS_S, latency_s)


class RollupBatch:
    """Collects deltas keyed by (minute, model, job) before one upsert."""

    def __init__(self) -> None:
        self.rows: dict[tuple[datetime, str, uuid.UUID], RollupDelta] = {}

    def delta(self, *, minute: datetime, model: str, job_id: uuid.UUID) -> RollupDelta:
        """The delta row for one key, created on first use."""
        return self.rows.setdefault((minute, model, job_id), RollupDelta())

    def add_request(
        self,
        *,
        job_id: uuid.UUID,
        model: str,
        started_at: datetime | None,
        outcome: str,
        error_class: str | None,
        status: int | None,
        attempt: int,
        prompt_tokens: int,
        completion_tokens: int,
        cost_usd: Decimal,
        latency_s: float,
    ) -> None:
        """Count one provider call."""
        d = self.delta(minute=minute_of(started_at), model=model, job_id=job_id)
        d.requests += 1
        if outcome != "ok":
            d.errors += 1
            key = error_class or "unknown"
            d.errors_by_class[key] = d.errors_by_class.get(key, 0) + 1
        if status == 429 or error_class == "rate_limit":
            d.rate_limited += 1
        if attempt > 1:
            d.retries += 1
        d.prompt_tokens += prompt_tokens
        d.completion_tokens += completion_tokens
        d.cost_usd += cost_usd
        d.latency_sum_s += latency_s
        d.latency[latency_bucket(latency_s)] += 1

    def remove_charge(
        self, *, job_id: uuid.UUID, model: str, error_class: str, cost_usd: Decimal
    ) -> None:
        """Take back a call counted as a charge that its real answer now replaces."""
        d = self.delta(minute=minute_of(None), model=model, job_id=job_id)
        d.requests -= 1
        d.errors -= 1
        d.errors_by_class[error_class] = d.errors_by_class.get(error_class, 0) - 1
        d.cost_usd -= cost_usd
        d.latency[latency_bucket(0.0)] -= 1

    def add_story(
        self, *, job_id: uuid.UUID, model: str, accepted: bool | None, reasons: Iterable[str] = ()
    ) -> None:
        """Count one finished task: accepted, rejected (with reasons) or failed (None)."""
        d = self.delta(minute=minute_of(None), model=model, job_id=job_id)
        if accepted is None:
            d.tasks_failed += 1
        elif accepted:
            d.stories_accepted += 1
        else:
            d.stories_rejected += 1
            for reason in reasons:
                d.rejections_by_reason[reason] = d.rejections_by_reason.get(reason, 0) + 1


_SUM_COLUMNS = (
    "requests",
    "errors",
    "rate_limited",
    "retries",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "stories_accepted",
    "stories_rejected",
    "tasks_failed",
    "duplicates",
    "exact_duplicates",
    "latency_sum_s",
    *LATENCY_COLUMNS,
)


def _merge(column: str) -> str:
    return (
        f"{column} = (SELECT COALESCE(jsonb_object_agg(k, "
        f"COALESCE((rollups_minute.{column} ->> k)::bigint, 0) "
        f"+ COALESCE((EXCLUDED.{column} ->> k)::bigint, 0)), '{{}}'::jsonb) "
        f"FROM jsonb_object_keys(rollups_minute.{column} || EXCLUDED.{column}) AS k)"
    )


_UPSERT = text(
    "INSERT INTO rollups_minute (minute, model, job_id, errors_by_class, rejections_by_reason, "
    + ", ".join(_SUM_COLUMNS)
    + ") VALUES (:minute, :model, :job_id, CAST(:errors_by_class AS jsonb), "
    "CAST(:rejections_by_reason AS jsonb), "
    + ", ".join(f":{c}" for c in _SUM_COLUMNS)
    + ") ON CONFLICT (minute, model, job_id) DO UPDATE SET "
    + ", ".join(f"{c} = rollups_minute.{c} + EXCLUDED.{c}" for c in _SUM_COLUMNS)
    + ", "
    + _merge("errors_by_class")
    + ", "
    + _merge("rejections_by_reason")
)


def rollup_statements(batch: RollupBatch) -> list[tuple[TextClause, dict[str, Any]]]:
    """One upsert per row, in sorted key order (so concurrent writers never deadlock)."""
    out: list[tuple[TextClause, dict[str, Any]]] = []
    for (minute, model, job_id), d in sorted(
        batch.rows.items(), key=lambda kv: (kv[0][0], kv[0][1], str(kv[0][2]))
    ):
        row: dict[str, Any] = {
            "minute": minute,
            "model": model,
            "job_id": job_id,
            "errors_by_class": json.dumps(d.errors_by_class),
            "rejections_by_reason": json.dumps(d.rejections_by_reason),
            "requests": d.requests,
            "errors": d.errors,
            "rate_limited": d.rate_limited,
            "retries": d.retries,
            "prompt_tokens": d.prompt_tokens,
            "completion_tokens": d.completion_tokens,
            "cost_usd": d.cost_usd,
            "stories_accepted": d.stories_accepted,
            "stories_rejected": d.stories_rejected,
            "tasks_failed": d.tasks_failed,
            "duplicates": d.duplicates,
            "exact_duplicates": d.exact_duplicates,
            "latency_sum_s": d.latency_sum_s,
        }
        row.update(zip(LATENCY_COLUMNS, d.latency, strict=True))
        out.append((_UPSERT, row))
    return out


async def upsert_rollups(*, session: AsyncSession, batch: RollupBatch) -> None:
    """Add a batch to the rollup rows."""
    for stmt, row in rollup_statements(batch):
        await session.execute(stmt, row)


async def rollup_totals(
    *, session: AsyncSession, job_id: uuid.UUID | None = None
) -> dict[str, Any]:
    """Sums over all rollup rows (of one job): totals the API and tests compare."""
    where = "WHERE job_id = :job_id" if job_id else ""
    row = (
        await session.execute(
            text(
                "SELECT COALESCE(SUM(requests),0), COALESCE(SUM(errors),0), "
                "COALESCE(SUM(rate_limited),0), COALESCE(SUM(cost_usd),0), "
                "COALESCE(SUM(stories_accepted),0), COALESCE(SUM(stories_rejected),0), "
                "COALESCE(SUM(tasks_failed),0) "
                f"FROM rollups_minute {where}"
            ),
            {"job_id": job_id},
        )
    ).one()
    keys = (
        "requests",
        "errors",
        "rate_limited",
        "cost_usd",
        "stories_accepted",
        "stories_rejected",
        "tasks_failed",
    )
    return dict(zip(keys, row, strict=True))


async def duplicates_by_model(*, session: AsyncSession, job_id: uuid.UUID) -> list[dict[str, Any]]:
    """A job's duplicates per model from its rollups (a few rows per minute, not its stories).

    `checked` counts the job's accepted stories: each is checked moments after it is stored.
    """
    rows = await session.execute(
        text(
            "SELECT model, SUM(stories_accepted), SUM(duplicates), SUM(exact_duplicates) "
            "FROM rollups_minute WHERE job_id = :job_id GROUP BY model ORDER BY model"
        ),
        {"job_id": job_id},
    )
    out = []
    for model, accepted, dups, exact in rows:
        checked, dups, exact = int(accepted), int(dups), int(exact)
        if not checked and not dups:
            continue
        out.append(
            {
                "job_id": str(job_id),
                "model": model,
                "checked": checked,
                "exact_duplicates": exact,
                "near_duplicates": dups - exact,
                "duplicates": dups,
                "duplicate_rate": round(dups / checked, 6) if checked else 0.0,
            }
        )
    return out
