"""/v1/diversity and /v1/jobs/{id}/diversity: how varied the stories are, from running sums."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends
from sqlalchemy.ext.asyncio import AsyncSession

from service import store
from service.api.deps import not_found, require_token, session_dep
from service.store.diversity_report import diversity_report

router = APIRouter(prefix="/v1", tags=["diversity"], dependencies=[Depends(require_token)])


@router.get("/diversity", response_model=dict[str, Any])
async def overall_diversity(session: AsyncSession = session_dep) -> dict[str, Any]:
    """Recipe coverage, feature mix, distinct-n, nearest-neighbour Jaccard, openings, length
    and vocabulary-share histograms and rejection reasons over every accepted story."""
    return await diversity_report(session=session)


@router.get("/jobs/{job_id}/diversity", response_model=dict[str, Any])
async def job_diversity(job_id: uuid.UUID, session: AsyncSession = session_dep) -> dict[str, Any]:
    """The same figures for one job's accepted stories."""
    try:
        await store.get_job(session=session, job_id=job_id)
    except store.JobNotFound:
        raise not_found("job_id", f"job {job_id} not found") from None
    return await diversity_report(session=session, job_id=job_id)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The report as a few text lines (`tinystories jobs show`)."""
    if not report.get("stories"):
        return ["  diversity: no accepted story checked yet"]
    cov = report["recipe_coverage"]
    roles = ", ".join(
        f"{role}s {c['used']}/{c['vocabulary']} ({100 * (c['coverage'] or 0):.1f}%)"
        for role, c in cov.items()
    )
    d = report["distinct"]
    nn = report["nearest_neighbour"]["share_at_least"]
    lines = [
        f"  diversity over {report['stories']} accepted stories",
        f"    recipe coverage {roles}",
        "    distinct-1/2/3 "
        + " / ".join("n/a" if d[k] is None else f"{d[k]:.3f}" for k in sorted(d)),
        "    nearest-neighbour Jaccard "
        + ", ".join(f">={t}: {100 * (v or 0):.1f}%" for t, v in nn.items()),
    ]
    mix = [
        f"{f['feature']} {100 * (f['actual'] or 0):.0f}%"
        f" (asked {100 * (f['configured'] or 0):.0f}%)"
        for f in report["features"]
    ]
    lines.append("    features " + ", ".join(mix))
    top = report["openings"]["top"][:3]
    if top:
        lines.append(
            "    top openings "
            + "; ".join(f'"{o["text"]}" {100 * (o["share"] or 0):.0f}%' for o in top)
        )
    return lines


def metric_families(report: dict[str, Any]) -> list[Any]:
    """The overall report's numeric figures as Prometheus gauges (/metrics)."""
    from prometheus_client.core import GaugeMetricFamily

    if not report:
        return []
    coverage = GaugeMetricFamily(
        "tinystories_recipe_coverage",
        "Share of the vocabulary's words of a role used by some recipe.",
        labels=["role"],
    )
    for role, c in report["recipe_coverage"].items():
        coverage.add_metric([role], c["coverage"] or 0.0)
    distinct = GaugeMetricFamily(
        "tinystories_distinct_ngrams_ratio",
        "distinct-n of accepted stories: distinct n-grams over all n-grams (HyperLogLog).",
        labels=["n"],
    )
    for key, value in sorted(report["distinct"].items()):
        if value is not None:
            distinct.add_metric([key.rsplit("_", 1)[1]], value)
    near = GaugeMetricFamily(
        "tinystories_nn_jaccard_share",
        "Share of checked stories whose nearest earlier story has at least this Jaccard.",
        labels=["at_least"],
    )
    for threshold, share in report["nearest_neighbour"]["share_at_least"].items():
        near.add_metric([threshold], share or 0.0)
    features = GaugeMetricFamily(
        "tinystories_feature_share",
        "Share of accepted stories with a feature: actual, and configured by the jobs.",
        labels=["feature", "kind"],
    )
    for f in report["features"]:
        features.add_metric([f["feature"], "actual"], f["actual"] or 0.0)
        features.add_metric([f["feature"], "configured"], f["configured"] or 0.0)
    return [
        GaugeMetricFamily(
            "tinystories_diversity_stories", "Accepted stories counted.", value=report["stories"]
        ),
        coverage,
        distinct,
        near,
        features,
        GaugeMetricFamily(
            "tinystories_distinct_openings",
            "Distinct opening 5-grams.",
            value=report["openings"]["distinct"],
        ),
    ]
