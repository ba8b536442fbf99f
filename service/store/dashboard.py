"""Dashboard and metrics reads: per-minute rollups, job counters, workers, queue depth.

Nothing here scans stories or requests: figures come from rollups_minute (one row per
minute, model and job), the jobs counters and the small workers table, so a read costs the
same with a thousand stories or millions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.store.models import LATENCY_COLUMNS

ACTIVE_JOB_STATUSES = ("queued", "running", "paused")


@dataclass(frozen=True)
class ModelTotals:
    """One model's sums over a window of rollup minutes."""

    model: str
    requests: int
    tokens: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    stories_accepted: int
    stories_rejected: int
    first_minute: datetime | None
    last_minute: datetime | None


@dataclass
class HealthTotals:
    """Error, retry, rejection and latency sums over a window."""

    requests: int = 0
    errors: int = 0
    rate_limited: int = 0
    retries: int = 0
    tasks_failed: int = 0
    stories_accepted: int = 0
    stories_rejected: int = 0
    duplicates: int = 0
    latency_sum_s: float = 0.0
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_COLUMNS))
    errors_by_class: dict[str, int] = field(default_factory=dict)
    rejections_by_reason: dict[str, int] = field(default_factory=dict)


def _window(
    minutes: int | None, since: datetime | None, before: datetime | None
) -> tuple[str, dict[str, Any]]:
    """WHERE clause over rollup minutes: last `minutes`, and/or [since, before)."""
    clauses, params = ["TRUE"], {}
    if minutes is not None:
        clauses.append("minute >= date_trunc('minute', now()) - make_interval(mins => :back)")
        params["back"] = minutes - 1
    if since is not None:
        clauses.append("minute >= :since")
        params["since"] = since
    if before is not None:
        clauses.append("minute < :before")
        params["before"] = before
    return " AND ".join(clauses), params


async def model_series(
    *, session: AsyncSession, minutes: int = 60
) -> list[tuple[datetime, str, int, int]]:
    """(minute, model, requests, tokens) per minute over the last `minutes` (PK range scan)."""
    rows = await session.execute(
        text(
            "SELECT minute, model, SUM(requests)::bigint, "
            "SUM(prompt_tokens + completion_tokens)::bigint "
            "FROM rollups_minute "
            "WHERE minute >= date_trunc('minute', now()) - make_interval(mins => :back) "
            "GROUP BY minute, model ORDER BY minute, model"
        ),
        {"back": minutes - 1},
    )
    return [(m, model, int(r), int(t)) for m, model, r, t in rows]


async def model_totals(
    *,
    session: AsyncSession,
    minutes: int | None = None,
    since: datetime | None = None,
    before: datetime | None = None,
) -> list[ModelTotals]:
    """Per-model sums over the last `minutes` and/or the minutes in [since, before)."""
    where, params = _window(minutes, since, before)
    rows = await session.execute(
        text(
            "SELECT model, SUM(requests)::bigint, SUM(prompt_tokens)::bigint, "
            "SUM(completion_tokens)::bigint, SUM(cost_usd), SUM(stories_accepted)::bigint, "
            "SUM(stories_rejected)::bigint, MIN(minute), MAX(minute) "
            f"FROM rollups_minute WHERE {where} GROUP BY model ORDER BY model"
        ),
        params,
    )
    return [
        ModelTotals(
            model=model,
            requests=int(req),
            tokens=int(pt) + int(ct),
            prompt_tokens=int(pt),
            completion_tokens=int(ct),
            cost_usd=float(cost),
            stories_accepted=int(acc),
            stories_rejected=int(rej),
            first_minute=first,
            last_minute=last,
        )
        for model, req, pt, ct, cost, acc, rej, first, last in rows
    ]


async def health_totals(
    *,
    session: AsyncSession,
    minutes: int | None = None,
    since: datetime | None = None,
    before: datetime | None = None,
    by_model: bool = False,
) -> dict[str, HealthTotals]:
    """Health sums keyed by model (or "all") over the last `minutes` and/or [since, before)."""
    where, params = _window(minutes, since, before)
    key = "model" if by_model else "'all'"
    lat = ", ".join(f"SUM({c})::bigint" for c in LATENCY_COLUMNS)
    rows = await session.execute(
        text(
            f"SELECT {key}, SUM(requests)::bigint, SUM(errors)::bigint, "
            "SUM(rate_limited)::bigint, SUM(retries)::bigint, SUM(tasks_failed)::bigint, "
            "SUM(stories_accepted)::bigint, SUM(stories_rejected)::bigint, "
            f"SUM(duplicates)::bigint, SUM(latency_sum_s), {lat} "
            f"FROM rollups_minute WHERE {where} GROUP BY 1"
        ),
        params,
    )
    out: dict[str, HealthTotals] = {}
    for row in rows:
        name, req, err, rl, retries, failed, acc, rej, dups, lat_sum, *buckets = row
        out[name] = HealthTotals(
            requests=int(req or 0),
            errors=int(err or 0),
            rate_limited=int(rl or 0),
            retries=int(retries or 0),
            tasks_failed=int(failed or 0),
            stories_accepted=int(acc or 0),
            stories_rejected=int(rej or 0),
            duplicates=int(dups or 0),
            latency_sum_s=float(lat_sum or 0.0),
            latency_buckets=[int(b or 0) for b in buckets],
        )
    for column, attr in (
        ("errors_by_class", "errors_by_class"),
        ("rejections_by_reason", "rejections_by_reason"),
    ):
        counts = await session.execute(
            text(
                f"SELECT {key}, e.key, SUM(e.value::bigint)::bigint "
                f"FROM rollups_minute, jsonb_each_text({column}) AS e "
                f"WHERE {where} GROUP BY 1, 2 ORDER BY 1, 2"
            ),
            params,
        )
        for name, label, total in counts:
            getattr(out.setdefault(name, HealthTotals()), attr)[label] = int(total)
    return out


async def dashboard_jobs(
    *, session: AsyncSession, limit: int = 50, rate_minutes: int = 5
) -> list[dict[str, Any]]:
    """Active jobs first, then the newest ones, with recent rates from the rollups."""
    rows = await session.execute(
        text(
            "SELECT j.id, j.name, j.status, j.n_stories, j.completed, j.rejected, j.failed, "
            "j.budget_usd, j.spent_usd, j.reserved_usd, j.models, j.provider, j.n_requests, "
            "j.prompt_tokens, j.completion_tokens, j.created_at, j.started_at, j.finished_at, "
            "j.vocabulary, "
            "COALESCE(r.requests, 0), COALESCE(r.tokens, 0), COALESCE(r.stories, 0), r.span_s "
            "FROM (SELECT * FROM jobs "
            "      ORDER BY (status = ANY(:active)) DESC, created_at DESC, id LIMIT :limit) j "
            "LEFT JOIN LATERAL ("
            "  SELECT SUM(requests) AS requests, "
            "         SUM(prompt_tokens + completion_tokens) AS tokens, "
            "         SUM(stories_accepted + stories_rejected + tasks_failed) AS stories, "
            "         EXTRACT(EPOCH FROM (now() - MIN(minute))) AS span_s "
            "  FROM rollups_minute rm WHERE rm.job_id = j.id "
            "  AND rm.minute >= date_trunc('minute', now()) - make_interval(mins => :back)"
            ") r ON TRUE "
            "ORDER BY (j.status = ANY(:active)) DESC, j.created_at DESC, j.id"
        ),
        {"active": list(ACTIVE_JOB_STATUSES), "limit": limit, "back": rate_minutes - 1},
    )
    jobs: list[dict[str, Any]] = []
    for row in rows:
        (
            job_id, name, status, n_stories, completed, rejected, failed, budget, spent,
            reserved, models, provider, n_requests, prompt_tokens, completion_tokens,
            created_at, started_at, finished_at, vocabulary, r_requests, r_tokens, r_stories,
            span_s,
        )  = row  # fmt: skip
        minutes = max(float(span_s or 0.0), 60.0) / 60.0
        jobs.append(
            {
                "id": job_id,
                "name": name,
                "status": status,
                "n_stories": int(n_stories),
                "completed": int(completed),
                "rejected": int(rejected),
                "failed": int(failed),
                "budget_usd": float(budget),
                "spent_usd": float(spent),
                "reserved_usd": float(reserved),
                "models": [m.get("model") for m in (models or [])],
                "provider": provider,
                "n_requests": int(n_requests),
                "tokens": int(prompt_tokens) + int(completion_tokens),
                "created_at": created_at,
                "started_at": started_at,
                "finished_at": finished_at,
                "vocabulary": vocabulary,  # {name, sha256, noun, verb, adjective} or None
                "requests_per_minute": float(r_requests) / minutes,
                "tokens_per_minute": float(r_tokens) / minutes,
                "stories_per_minute": float(r_stories) / minutes,
            }
        )
    return jobs


async def job_status_totals(*, session: AsyncSession) -> dict[str, dict[str, float]]:
    """Per job status: job count, story counters, spent, budget and reserved (jobs table)."""
    rows = await session.execute(
        text(
            "SELECT status, COUNT(*), COALESCE(SUM(completed), 0), COALESCE(SUM(rejected), 0), "
            "COALESCE(SUM(failed), 0), COALESCE(SUM(n_stories), 0), "
            "COALESCE(SUM(spent_usd), 0), COALESCE(SUM(budget_usd), 0), "
            "COALESCE(SUM(reserved_usd), 0) FROM jobs GROUP BY status"
        )
    )
    keys = ("jobs", "completed", "rejected", "failed", "n_stories", "spent", "budget", "reserved")
    return {
        status: {k: float(v) for k, v in zip(keys, values, strict=True)} for status, *values in rows
    }


async def queue_depth(*, session: AsyncSession) -> dict[str, int]:
    """Runnable work: pending tasks of queued or running jobs with the tasks they have yet to
    make (a paused or exhausted job's tasks wait, they are not queue depth), and leased
    tasks."""
    pending, running = (
        await session.execute(
            text(
                "SELECT (SELECT COUNT(*) FROM tasks t JOIN jobs j ON j.id = t.job_id "
                "WHERE t.status = 'pending' AND j.status IN ('queued', 'running')) "
                "+ (SELECT COALESCE(SUM(n_stories - tasks_made), 0) FROM jobs "
                "   WHERE status IN ('queued', 'running')), "
                "(SELECT COUNT(*) FROM tasks WHERE status = 'running')"
            )
        )
    ).one()
    return {"pending": int(pending), "running": int(running)}


async def list_workers(*, session: AsyncSession, recent_hours: int = 24) -> list[dict[str, Any]]:
    """Workers running or seen recently, with their heartbeat age in seconds."""
    rows = await session.execute(
        text(
            "SELECT id, host, pid, concurrency, status, in_flight, started_at, "
            "EXTRACT(EPOCH FROM (now() - heartbeat_at)) FROM workers "
            "WHERE status = 'running' OR heartbeat_at > now() - make_interval(hours => :h) "
            "ORDER BY status, heartbeat_at DESC LIMIT 200"
        ),
        {"h": recent_hours},
    )
    return [
        {
            "id": wid,
            "host": host,
            "pid": int(pid),
            "concurrency": int(concurrency),
            "status": status,
            "in_flight": int(in_flight),
            "started_at": started_at,
            "heartbeat_age_s": float(age),
        }
        for wid, host, pid, concurrency, status, in_flight, started_at, age in rows
    ]


async def bucket_limits(*, session: AsyncSession) -> dict[str, dict[str, int | None]]:
    """RPM/TPM each model's shared rate bucket was configured with."""
    rows = await session.execute(text("SELECT model, rpm, tpm FROM rate_buckets"))
    return {model: {"rpm": rpm, "tpm": tpm} for model, rpm, tpm in rows}
