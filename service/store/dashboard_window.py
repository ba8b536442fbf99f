"""Dashboard reads over a chosen time window: per-model series in buckets, jobs' lifetimes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


async def model_series_between(
    *, session: AsyncSession, since: datetime, until: datetime, bucket_minutes: int
) -> list[tuple[datetime, str, int, int, int, int]]:
    """(bucket start, model, requests, tokens, busiest minute's requests, its tokens) per
    bucket of `bucket_minutes` rollup minutes in [since, until] (PK range scan)."""
    rows = await session.execute(
        text(
            """
            WITH m AS (
                SELECT minute, model, SUM(requests)::bigint AS req,
                       SUM(prompt_tokens + completion_tokens)::bigint AS tok
                FROM rollups_minute
                WHERE minute >= date_trunc('minute', CAST(:since AS timestamptz))
                  AND minute <= :until
                GROUP BY minute, model
            )
            SELECT date_trunc('minute', CAST(:since AS timestamptz)) + make_interval(
                       mins => (FLOOR(EXTRACT(EPOCH FROM minute - date_trunc(
                           'minute', CAST(:since AS timestamptz))) / 60 / :w) * :w)::int),
                   model, SUM(req)::bigint, SUM(tok)::bigint, MAX(req), MAX(tok)
            FROM m GROUP BY 1, 2 ORDER BY 1, 2
            """
        ),
        {"since": since, "until": until, "w": bucket_minutes},
    )
    return [(t, model, int(r), int(k), int(pr), int(pk)) for t, model, r, k, pr, pk in rows]


async def job_spans(*, session: AsyncSession, limit: int = 50) -> list[dict[str, Any]]:
    """Status, start and end of the jobs the dashboard lists (active first, then newest)."""
    rows = await session.execute(
        text(
            "SELECT status, started_at, finished_at FROM jobs "
            "ORDER BY (status IN ('queued', 'running', 'paused')) DESC, created_at DESC, id "
            "LIMIT :n"
        ),
        {"n": limit},
    )
    return [{"status": s, "started_at": a, "finished_at": b} for s, a, b in rows]
