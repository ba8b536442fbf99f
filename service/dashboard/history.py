"""Since-start totals that cost the same after a day or a month of rollups.

Minutes older than SETTLE_MINUTES no longer change, so their sums are read once, kept, and
extended as the cutoff moves; each read adds only the open tail. A full re-read every
REBUILD_S picks up anything written late.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from service.store import dashboard as reads

# Rollup rows are written when a task finishes, for the minute its request started: a task's
# requests (retries and backoff included) end well within this.
SETTLE_MINUTES = 15
REBUILD_S = 600.0


@dataclass(frozen=True)
class Totals:
    """Per-model sums and per-model health sums over some minutes."""

    models: dict[str, reads.ModelTotals]
    health: dict[str, reads.HealthTotals]

    def all_health(self) -> reads.HealthTotals:
        """Health summed over models."""
        out = reads.HealthTotals()
        for h in self.health.values():
            out = merge_health(out, h)
        return out


def _min(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _max(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


def merge_models(a: reads.ModelTotals, b: reads.ModelTotals) -> reads.ModelTotals:
    """Sum of one model's totals over two disjoint windows."""
    return replace(
        a,
        requests=a.requests + b.requests,
        tokens=a.tokens + b.tokens,
        prompt_tokens=a.prompt_tokens + b.prompt_tokens,
        completion_tokens=a.completion_tokens + b.completion_tokens,
        cost_usd=a.cost_usd + b.cost_usd,
        stories_accepted=a.stories_accepted + b.stories_accepted,
        stories_rejected=a.stories_rejected + b.stories_rejected,
        first_minute=_min(a.first_minute, b.first_minute),
        last_minute=_max(a.last_minute, b.last_minute),
    )


def _add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: a.get(k, 0) + b.get(k, 0) for k in sorted(a.keys() | b.keys())}


def merge_health(a: reads.HealthTotals, b: reads.HealthTotals) -> reads.HealthTotals:
    """Sum of health totals over two disjoint windows (or two models)."""
    return reads.HealthTotals(
        requests=a.requests + b.requests,
        errors=a.errors + b.errors,
        rate_limited=a.rate_limited + b.rate_limited,
        retries=a.retries + b.retries,
        tasks_failed=a.tasks_failed + b.tasks_failed,
        stories_accepted=a.stories_accepted + b.stories_accepted,
        stories_rejected=a.stories_rejected + b.stories_rejected,
        duplicates=a.duplicates + b.duplicates,
        latency_sum_s=a.latency_sum_s + b.latency_sum_s,
        latency_buckets=[x + y for x, y in zip(a.latency_buckets, b.latency_buckets, strict=True)],
        errors_by_class=_add_counts(a.errors_by_class, b.errors_by_class),
        rejections_by_reason=_add_counts(a.rejections_by_reason, b.rejections_by_reason),
    )


def merge(a: Totals, b: Totals) -> Totals:
    """Totals over the union of two disjoint windows."""
    models = dict(a.models)
    for name, m in b.models.items():
        models[name] = merge_models(models[name], m) if name in models else m
    health = dict(a.health)
    for name, h in b.health.items():
        health[name] = merge_health(health[name], h) if name in health else h
    return Totals(models=models, health=health)


async def read_window(
    *, session: AsyncSession, since: datetime | None, before: datetime | None
) -> Totals:
    """Totals of the rollup minutes in [since, before)."""
    models = await reads.model_totals(session=session, since=since, before=before)
    health = await reads.health_totals(session=session, since=since, before=before, by_model=True)
    return Totals(models={m.model: m for m in models}, health=health)


class SinceStart:
    """Keeps the settled part of the since-start totals of one app."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._cutoff: datetime | None = None
        self._settled = Totals(models={}, health={})
        self._built = 0.0

    async def read(self, *, session: AsyncSession, now: datetime | None = None) -> Totals:
        """Totals over every rollup minute."""
        now = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
        cutoff = now - timedelta(minutes=SETTLE_MINUTES)
        async with self._lock:
            stale = time.monotonic() - self._built > REBUILD_S
            if self._cutoff is None or stale or cutoff < self._cutoff:
                self._settled = await read_window(session=session, since=None, before=cutoff)
                self._built = time.monotonic()
            elif cutoff > self._cutoff:
                more = await read_window(session=session, since=self._cutoff, before=cutoff)
                self._settled = merge(self._settled, more)
            self._cutoff = cutoff
            settled = self._settled
        tail = await read_window(session=session, since=cutoff, before=None)
        return merge(settled, tail)
