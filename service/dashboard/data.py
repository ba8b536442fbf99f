"""The dashboard's figures: JSON-ready dicts built from the dashboard store reads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.dashboard.history import SinceStart
from service.settings import Settings
from service.store import dashboard as reads
from service.store import dashboard_window as window_reads
from service.store.batch_report import batch_jobs
from service.store.models import LATENCY_BUCKETS_S
from service.store.providers import provider_pools

WINDOW_MINUTES = 60
RATE_MINUTES = 5
FINAL_STATUSES = ("completed", "cancelled", "failed", "budget_exhausted")
ACTIONS: dict[str, tuple[str, ...]] = {
    "queued": ("pause", "cancel"),
    "running": ("pause", "cancel"),
    "paused": ("resume", "cancel"),
    "budget_exhausted": ("resume", "cancel"),  # resume works once the budget is raised
}


def latency_percentile(buckets: list[int], q: float) -> float | None:
    """The q-quantile (0..1) of a bucketed histogram, interpolated inside its bucket.

    The last bucket is open (> its lower bound); a quantile falling there reports that bound.
    """
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            low = LATENCY_BUCKETS_S[i - 1] if i > 0 else 0.0
            if i >= len(LATENCY_BUCKETS_S):
                return low
            high = LATENCY_BUCKETS_S[i]
            return low + (high - low) * max(rank - seen, 0.0) / count
        seen += count
    return LATENCY_BUCKETS_S[-1]


def latency_bucket_bound(buckets: list[int], q: float) -> float | None:
    """Upper bound of the bucket holding the q-quantile (None: none yet, or the open bucket)."""
    total = sum(buckets)
    if total == 0:
        return None
    seen = 0
    for i, count in enumerate(buckets):
        seen += count
        if count and seen >= q * total:
            return LATENCY_BUCKETS_S[i] if i < len(LATENCY_BUCKETS_S) else None
    return None


def _minutes_since(first: datetime | None, now: datetime, cap: float | None = None) -> float:
    if first is None:
        return 1.0
    minutes = (now - first).total_seconds() / 60.0
    if cap is not None:
        minutes = min(minutes, cap)
    return max(minutes, 1.0)


def _limits(settings: Settings, buckets: dict[str, dict[str, int | None]], model: str) -> dict:
    configured = settings.model_limits.get(model) or buckets.get(model) or {}
    return {"rpm": configured.get("rpm"), "tpm": configured.get("tpm")}


WINDOWS: dict[str, int | None] = {"job": None, "15m": 15, "1h": 60, "6h": 360}
MAX_POINTS = 120
ACTIVE = ("queued", "running", "paused")


async def chart_window(
    *, session: AsyncSession, key: str, now: datetime
) -> tuple[datetime, datetime, str]:
    """(start, end, label) of the rate charts: a fixed span back from now, or ("job") the
    lifetime of the active jobs (or else of the newest job that ran)."""
    minutes = WINDOWS.get(key)
    if minutes is not None:
        return now - timedelta(minutes=minutes), now, f"last {key}"
    spans = await window_reads.job_spans(session=session)
    active = [j["started_at"] for j in spans if j["status"] in ACTIVE and j["started_at"]]
    if active:
        return min(active), now, "active jobs"
    ran = [j for j in spans if j["started_at"]]
    if ran:
        newest = max(ran, key=lambda j: j["started_at"])
        end = newest["finished_at"] or now
        return newest["started_at"], end, "newest job"
    return now - timedelta(minutes=60), now, "last 1h (no job has run)"


async def rates(
    *, session: AsyncSession, settings: Settings, history: SinceStart, window: str = "job"
) -> dict[str, Any]:
    """Per model: requests and tokens per minute over the chosen window vs the limits.

    Utilisation is the window's requests over (limit x window minutes): the same span the
    chart shows, so a five-minute job is not averaged over an hour."""
    now = datetime.now(UTC)
    start, end, label = await chart_window(session=session, key=window, now=now)
    # At least five minutes, so a job that just started still draws a line.
    start = min(start, end - timedelta(minutes=5))
    span_min = (end - start).total_seconds() / 60.0
    width = max(1, -(-int(span_min + 1) // MAX_POINTS))
    series = await window_reads.model_series_between(
        session=session, since=start, until=end, bucket_minutes=width
    )
    total = list((await history.read(session=session)).models.values())
    hour = {m.model: m for m in await reads.model_totals(session=session, minutes=WINDOW_MINUTES)}
    buckets = await reads.bucket_limits(session=session)
    first = start.replace(second=0, microsecond=0)
    n_points = int(span_min // width) + 1
    by_model: dict[str, dict[datetime, tuple[int, int, int, int]]] = {}
    for t, model, req, tok, peak_req, peak_tok in series:
        by_model.setdefault(model, {})[t] = (req, tok, peak_req, peak_tok)
    names = sorted({m.model for m in total} | set(settings.model_limits) | set(by_model))
    models = []
    for name in names:
        points, in_window = [], by_model.get(name, {})
        for i in range(n_points):
            t = first + timedelta(minutes=i * width)
            req, tok, _, _ = in_window.get(t, (0, 0, 0, 0))
            points.append({"t": t.isoformat(), "requests": req / width, "tokens": tok / width})
        req_sum = sum(v[0] for v in in_window.values())
        tok_sum = sum(v[1] for v in in_window.values())
        limits = _limits(settings, buckets, name)
        rpm, tpm = req_sum / span_min, tok_sum / span_min
        all_time = next((m for m in total if m.model == name), None)
        start_minutes = _minutes_since(all_time.first_minute if all_time else None, now)
        last = hour.get(name)
        models.append(
            {
                "model": name,
                "limits": limits,
                "window": {
                    "requests": req_sum,
                    "tokens": tok_sum,
                    "requests_per_minute": rpm,
                    "tokens_per_minute": tpm,
                    "peak_requests_per_minute": max((v[2] for v in in_window.values()), default=0),
                    "peak_tokens_per_minute": max((v[3] for v in in_window.values()), default=0),
                    "use_requests": rpm / limits["rpm"] if limits["rpm"] else None,
                    "use_tokens": tpm / limits["tpm"] if limits["tpm"] else None,
                },
                "last_hour": {
                    "requests": last.requests if last else 0,
                    "tokens": last.tokens if last else 0,
                    "requests_per_minute": (last.requests if last else 0)
                    / _minutes_since(all_time.first_minute if all_time else None, now, cap=60),
                },
                "since_start": {
                    "requests": all_time.requests if all_time else 0,
                    "tokens": all_time.tokens if all_time else 0,
                    "minutes": start_minutes if all_time else 0,
                    "requests_per_minute": (all_time.requests if all_time else 0) / start_minutes,
                    "tokens_per_minute": (all_time.tokens if all_time else 0) / start_minutes,
                },
                "series": points,
            }
        )
    return {
        "now": now.isoformat(),
        "window": {
            "key": window,
            "label": label,
            "start": start.isoformat(),
            "end": end.isoformat(),
            "minutes": span_min,
            "bucket_minutes": width,
        },
        "window_minutes": span_min,
        "models": models,
    }


def _per_thousand(cost: float, accepted: int) -> float | None:
    return cost / accepted * 1000.0 if accepted else None


async def cost(*, session: AsyncSession, history: SinceStart) -> dict[str, Any]:
    """Spend per model and per job, per 1,000 accepted stories, projections, budget left."""
    models = (await history.read(session=session)).models
    per_model = [models[name] for name in sorted(models)]
    jobs = await reads.dashboard_jobs(session=session, rate_minutes=RATE_MINUTES)
    status_totals = await reads.job_status_totals(session=session)
    spent = sum(t["spent"] for t in status_totals.values())
    accepted = int(sum(t["completed"] for t in status_totals.values()))
    active = [t for s, t in status_totals.items() if s not in FINAL_STATUSES]
    # None, not $0, when no job is active: nothing is left because nothing is running.
    budget_left = (
        sum(max(t["budget"] - t["spent"] - t["reserved"], 0.0) for t in active) if active else None
    )
    per_job = []
    projected_total = 0.0
    for job in jobs:
        projection = project(job)
        if projection["to_finish_usd"] is not None:
            projected_total += projection["to_finish_usd"]
        per_job.append(
            {
                "id": str(job["id"]),
                "name": job["name"],
                "status": job["status"],
                "spent_usd": job["spent_usd"],
                "budget_usd": job["budget_usd"],
                "budget_left_usd": max(job["budget_usd"] - job["spent_usd"], 0.0),
                "cost_per_1000_accepted": _per_thousand(job["spent_usd"], job["completed"]),
                **{f"projected_{k}": v for k, v in projection.items()},
            }
        )
    return {
        "spent_usd": spent,
        "accepted": accepted,
        "cost_per_1000_accepted": _per_thousand(spent, accepted),
        "budget_left_usd": budget_left,
        "projected_to_finish_usd": projected_total if active else None,
        "jobs": int(sum(t["jobs"] for t in status_totals.values())),
        "per_model": [
            {
                "model": m.model,
                "cost_usd": m.cost_usd,
                "accepted": m.stories_accepted,
                "cost_per_1000_accepted": _per_thousand(m.cost_usd, m.stories_accepted),
            }
            for m in per_model
        ],
        "per_job": per_job,
    }


def project(job: dict[str, Any]) -> dict[str, float | None]:
    """Cost still to spend on an unfinished job at its average cost per finished task."""
    done = job["completed"] + job["rejected"] + job["failed"]
    remaining = max(job["n_stories"] - done, 0)
    if job["status"] in FINAL_STATUSES:
        return {"to_finish_usd": None, "total_usd": job["spent_usd"]}
    if done == 0:
        return {"to_finish_usd": None, "total_usd": None}
    to_finish = job["spent_usd"] / done * remaining
    # The budget caps what the job can still spend.
    to_finish = min(to_finish, max(job["budget_usd"] - job["spent_usd"], 0.0))
    return {"to_finish_usd": to_finish, "total_usd": job["spent_usd"] + to_finish}


def _health_view(h: reads.HealthTotals) -> dict[str, Any]:
    finished = h.stories_accepted + h.stories_rejected
    return {
        "requests": h.requests,
        "errors": h.errors,
        "error_rate": h.errors / h.requests if h.requests else None,
        "rate_limited": h.rate_limited,
        "retries": h.retries,
        "tasks_failed": h.tasks_failed,
        "stories_accepted": h.stories_accepted,
        "stories_rejected": h.stories_rejected,
        "acceptance_rate": h.stories_accepted / finished if finished else None,
        "errors_by_class": h.errors_by_class,
        "rejections_by_reason": h.rejections_by_reason,
        "duplicates": h.duplicates,
        # Share of accepted stories that duplicate an earlier one (exact or near).
        "duplicate_rate": h.duplicates / h.stories_accepted if h.stories_accepted else None,
        "latency": {
            "buckets_le_s": [*LATENCY_BUCKETS_S, None],
            "counts": h.latency_buckets,
            "mean_s": h.latency_sum_s / h.requests if h.requests else None,
            "p50_s": latency_percentile(h.latency_buckets, 0.50),
            "p90_s": latency_percentile(h.latency_buckets, 0.90),
            "p99_s": latency_percentile(h.latency_buckets, 0.99),
            # The histogram resolves no finer than a bucket: the page shows "<= bound".
            "p50_le_s": latency_bucket_bound(h.latency_buckets, 0.50),
            "p90_le_s": latency_bucket_bound(h.latency_buckets, 0.90),
            "p99_le_s": latency_bucket_bound(h.latency_buckets, 0.99),
        },
    }


async def health(*, session: AsyncSession, history: SinceStart) -> dict[str, Any]:
    """Errors, retries, 429s, rejections, duplicates and latency: last hour and since start."""
    hour = (await reads.health_totals(session=session, minutes=WINDOW_MINUTES)).get("all")
    total = (await history.read(session=session)).all_health()
    return {
        "last_hour": _health_view(hour or reads.HealthTotals()),
        "since_start": _health_view(total),
    }


def _eta(job: dict[str, Any], remaining: int) -> float | None:
    if job["status"] in FINAL_STATUSES or remaining == 0:
        return 0.0 if remaining == 0 else None
    if job["status"] == "paused" or job["stories_per_minute"] <= 0:
        return None
    return remaining / job["stories_per_minute"] * 60.0


async def jobs(*, session: AsyncSession) -> dict[str, Any]:
    """Jobs with progress, ETA, rates and the actions their state allows."""
    out = []
    for job in await reads.dashboard_jobs(session=session, rate_minutes=RATE_MINUTES):
        done = job["completed"] + job["rejected"] + job["failed"]
        remaining = max(job["n_stories"] - done, 0)
        # A finished job has no rates: its recent minutes are history, not speed.
        rates = {k: None for k in job if k.endswith("_per_minute")}
        out.append(
            {
                **job,
                **(rates if job["status"] in FINAL_STATUSES else {}),
                "id": str(job["id"]),
                "created_at": job["created_at"].isoformat() if job["created_at"] else None,
                "started_at": job["started_at"].isoformat() if job["started_at"] else None,
                "finished_at": job["finished_at"].isoformat() if job["finished_at"] else None,
                "done": done,
                "remaining": remaining,
                "progress": done / job["n_stories"] if job["n_stories"] else 1.0,
                "eta_seconds": _eta(job, remaining),
                "actions": list(ACTIONS.get(job["status"], ())),
                "vocabulary_label": vocabulary_label(job.get("vocabulary")),
            }
        )
    return {"jobs": out}


def vocabulary_label(vocabulary: dict[str, Any] | None) -> str | None:
    """'NAME: N nouns, N verbs, N adjectives' for a job with its own words; None for the
    packaged vocabulary."""
    if not vocabulary:
        return None
    counts = {role: int(vocabulary.get(role) or 0) for role in ("noun", "verb", "adjective")}
    sizes = ", ".join(f"{n:,} {role}{'' if n == 1 else 's'}" for role, n in counts.items())
    return f"{vocabulary.get('name') or 'custom'}: {sizes}"


async def overview(
    *, session: AsyncSession, settings: Settings, provider: dict[str, Any]
) -> dict[str, Any]:
    """Provider (simulator banner), queue depth, stories by status, workers."""
    queue = await reads.queue_depth(session=session)
    status_totals = await reads.job_status_totals(session=session)
    workers = await reads.list_workers(session=session)
    stale_after = max(3 * settings.heartbeat_seconds, 30.0)
    for worker in workers:
        worker["alive"] = worker["status"] == "running" and worker["heartbeat_age_s"] < stale_after
        worker["started_at"] = worker["started_at"].isoformat() if worker["started_at"] else None
    alive = [w for w in workers if w["alive"]]
    return {
        "provider": provider.get("provider"),
        "simulator": bool(provider.get("simulator")),
        "banner": provider.get("banner"),
        "queue": queue,
        "stories": {
            "accepted": int(sum(t["completed"] for t in status_totals.values())),
            "rejected": int(sum(t["rejected"] for t in status_totals.values())),
            "failed": int(sum(t["failed"] for t in status_totals.values())),
        },
        "jobs_by_status": {s: int(t["jobs"]) for s, t in sorted(status_totals.items())},
        "workers": workers,
        "workers_alive": len(alive),
        "in_flight": sum(w["in_flight"] for w in alive),
    }


async def providers(*, session: AsyncSession, settings: Settings) -> dict[str, Any]:
    """Provider pool members as the live workers see them (empty: no pools configured)."""
    stale_after = max(3 * settings.heartbeat_seconds, 30.0)
    return await provider_pools(session=session, stale_after_s=stale_after)


async def batches(*, session: AsyncSession) -> dict[str, Any]:
    """Batch API jobs: batches preparing, in progress, completed, failed, and $ saved."""
    return await batch_jobs(session=session)


def parse_job_id(value: str) -> uuid.UUID | None:
    """A job id from a path segment, or None when malformed."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
