"""Prometheus metrics at /metrics, computed at scrape time from the rollups and job counters.

Each app gets its own CollectorRegistry with one custom Collector, so the figures are those of
the database (shared by every API and worker process), not of one process's memory. The
endpoint needs the admin token like the rest of the API: per-model spend and error figures are
operational data, and Prometheus sends bearer tokens natively (`authorization:` in a scrape
config).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncSession

from service.api.diversity import metric_families
from service.dashboard.history import SinceStart
from service.store import dashboard as reads
from service.store.batches import batch_totals
from service.store.diversity_report import diversity_report
from service.store.models import LATENCY_BUCKETS_S
from service.store.providers import STATES, provider_pools

logger = logging.getLogger(__name__)
# The diversity gauges move slowly, while their report reads term tables that grow with the
# distinct openings (about 50 ms at 300k): one report serves the scrapes of this long.
DIVERSITY_MAX_AGE_S = 30.0

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Snapshot:
    """What one scrape reports, read from the database just before rendering."""

    models: list[reads.ModelTotals] = field(default_factory=list)
    health: dict[str, reads.HealthTotals] = field(default_factory=dict)
    queue: dict[str, int] = field(default_factory=dict)
    jobs: dict[str, dict[str, float]] = field(default_factory=dict)
    workers_alive: int = 0
    in_flight: int = 0
    simulator: bool = False
    diversity: dict[str, Any] = field(default_factory=dict)
    batches: dict[str, float] = field(default_factory=dict)
    providers: list[dict[str, Any]] = field(default_factory=list)


class DiversityCache:
    """The latest diversity report of all stories, rebuilt when older than max_age_s."""

    def __init__(self, max_age_s: float = DIVERSITY_MAX_AGE_S) -> None:
        self.max_age_s = max_age_s
        self._report: dict[str, Any] | None = None
        self._at = 0.0

    async def read(self, *, session: AsyncSession) -> dict[str, Any]:
        """The cached report, or a fresh one when it is missing or too old."""
        now = time.monotonic()
        if self._report is None or now - self._at >= self.max_age_s:
            self._report = await diversity_report(session=session)
            self._at = now
        return self._report


async def read_snapshot(
    *,
    session: AsyncSession,
    stale_after_s: float,
    history: SinceStart,
    diversity: DiversityCache | None = None,
) -> Snapshot:
    """All scrape figures in one read-only pass over small tables (the diversity report
    from `diversity` when given)."""
    workers = await reads.list_workers(session=session)
    alive = [
        w for w in workers if w["status"] == "running" and w["heartbeat_age_s"] < stale_after_s
    ]
    totals = await history.read(session=session)
    return Snapshot(
        models=[totals.models[name] for name in sorted(totals.models)],
        health=totals.health,
        queue=await reads.queue_depth(session=session),
        jobs=await reads.job_status_totals(session=session),
        workers_alive=len(alive),
        in_flight=sum(w["in_flight"] for w in alive),
        diversity=(
            await diversity.read(session=session)
            if diversity is not None
            else await diversity_report(session=session)
        ),
        batches=await batch_totals(session=session),
        providers=(await provider_pools(session=session, stale_after_s=stale_after_s))["pools"],
    )


class DatabaseCollector(Collector):
    """Turns the latest snapshot into metric families."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def collect(self) -> Iterator[Metric]:
        """Metric families of the current snapshot."""
        s = self.snapshot
        requests = CounterMetricFamily(
            "tinystories_requests", "Provider requests, failed ones included.", labels=["model"]
        )
        tokens = CounterMetricFamily("tinystories_tokens", "Tokens used.", labels=["model", "kind"])
        cost = CounterMetricFamily("tinystories_cost_usd", "Spend in USD.", labels=["model"])
        for m in s.models:
            requests.add_metric([m.model], m.requests)
            tokens.add_metric([m.model, "prompt"], m.prompt_tokens)
            tokens.add_metric([m.model, "completion"], m.completion_tokens)
            cost.add_metric([m.model], m.cost_usd)
        yield requests
        yield tokens
        yield cost

        errors = CounterMetricFamily(
            "tinystories_request_errors",
            "Failed requests by error class.",
            labels=["model", "error_class"],
        )
        rate_limited = CounterMetricFamily(
            "tinystories_rate_limited", "Requests answered 429.", labels=["model"]
        )
        retries = CounterMetricFamily(
            "tinystories_retries", "Requests that were a retry.", labels=["model"]
        )
        rejections = CounterMetricFamily(
            "tinystories_rejections", "Rejected stories by failed check.", labels=["model", "check"]
        )
        latency = HistogramMetricFamily(
            "tinystories_request_latency_seconds", "Provider request latency.", labels=["model"]
        )
        for model, h in sorted(s.health.items()):
            for error_class, n in sorted(h.errors_by_class.items()):
                errors.add_metric([model, error_class], n)
            rate_limited.add_metric([model], h.rate_limited)
            retries.add_metric([model], h.retries)
            for check, n in sorted(h.rejections_by_reason.items()):
                rejections.add_metric([model, check], n)
            cumulative, buckets = 0, []
            for bound, count in zip(
                [*map(str, LATENCY_BUCKETS_S), "+Inf"], h.latency_buckets, strict=True
            ):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric([model], buckets, h.latency_sum_s)
        yield errors
        yield rate_limited
        yield retries
        yield rejections
        yield latency

        queue = GaugeMetricFamily(
            "tinystories_queue_depth", "Tasks by queue state.", labels=["state"]
        )
        for state in ("pending", "running"):
            queue.add_metric([state], s.queue.get(state, 0))
        yield queue

        stories = GaugeMetricFamily(
            "tinystories_stories", "Finished tasks of all jobs by outcome.", labels=["status"]
        )
        for status, key in (
            ("accepted", "completed"),
            ("rejected", "rejected"),
            ("failed", "failed"),
        ):
            stories.add_metric([status], sum(t[key] for t in s.jobs.values()))
        yield stories

        jobs = GaugeMetricFamily("tinystories_jobs", "Jobs by status.", labels=["status"])
        for status, totals in sorted(s.jobs.items()):
            jobs.add_metric([status], totals["jobs"])
        yield jobs
        yield GaugeMetricFamily(
            "tinystories_workers_alive", "Workers with a fresh heartbeat.", value=s.workers_alive
        )
        yield GaugeMetricFamily(
            "tinystories_in_flight", "Requests in flight on live workers.", value=s.in_flight
        )
        yield GaugeMetricFamily(
            "tinystories_simulator",
            "1 when the LLM is the built-in simulator.",
            value=int(s.simulator),
        )
        yield from metric_families(s.diversity)
        batches = GaugeMetricFamily(
            "tinystories_batches", "Provider batches (Batch API jobs) by state.", labels=["state"]
        )
        for state in ("building", "uploaded", "submitted", "done"):
            batches.add_metric([state], s.batches.get(state, 0))
        yield batches
        yield GaugeMetricFamily(
            "tinystories_batch_saved_usd",
            "What the finished batches' answers would have cost online, minus their batch cost.",
            value=s.batches.get("saved_usd", 0.0),
        )
        yield from provider_families(s.providers)


def provider_families(pools: list[dict[str, Any]]) -> Iterator[Metric]:
    """Pool members: how many live workers see each breaker state, requests and errors
    (sums over the live workers: a worker that stops takes its counts with it)."""
    state = GaugeMetricFamily(
        "tinystories_provider_member_state",
        "Live workers that see a pool member's breaker in each state.",
        labels=["pool", "member", "state"],
    )
    requests = CounterMetricFamily(
        "tinystories_provider_member_requests",
        "Requests sent to a pool member by the live workers.",
        labels=["pool", "member"],
    )
    errors = CounterMetricFamily(
        "tinystories_provider_member_errors",
        "Failed requests of a pool member on the live workers.",
        labels=["pool", "member"],
    )
    for pool in pools:
        for m in pool["members"]:
            labels = [pool["model"], m["name"]]
            seen = {"open": m["workers_open"], "half_open": m["workers_half_open"]}
            seen["closed"] = m["workers"] - seen["open"] - seen["half_open"]
            for name in STATES:
                state.add_metric([*labels, name], seen[name])
            requests.add_metric(labels, m["requests"])
            errors.add_metric(labels, m["errors"])
    yield state
    yield requests
    yield errors


def install_metrics(app: FastAPI) -> None:
    """Add GET /metrics (admin token required) with a registry of its own to `app` (once)."""
    from service.dashboard import authorized, history_of

    if getattr(app.state, "metrics_registry", None) is not None:
        return
    registry = CollectorRegistry(auto_describe=False)
    collector = DatabaseCollector()
    registry.register(collector)
    lock = asyncio.Lock()
    diversity = app.state.metrics_diversity = DiversityCache()
    app.state.metrics_registry = registry

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Prometheus text exposition."""
        if not await authorized(request):
            return JSONResponse(
                status_code=401,
                content={"error": "missing or wrong admin token", "field": "authorization"},
                headers={"WWW-Authenticate": "Bearer"},
            )
        settings: Any = request.app.state.settings
        async with request.app.state.sessionmaker() as session:
            snapshot = await read_snapshot(
                session=session,
                stale_after_s=max(3 * settings.heartbeat_seconds, 30.0),
                history=history_of(request.app),
                diversity=diversity,
            )
        info = getattr(request.app.state, "provider_info", {}) or {}
        snapshot.simulator = bool(info.get("simulator"))
        # One render at a time: the collector holds the snapshot being rendered.
        async with lock:
            collector.snapshot = snapshot
            body = generate_latest(registry)
        return Response(body, media_type=CONTENT_TYPE)
