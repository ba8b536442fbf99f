"""The diversity report of a job or of all stories, from the running sums (no story scan).

`sketch_report` turns a sketch into JSON-ready figures (the export's dataset card uses it on
the exported stories); `diversity_report` adds what only the store knows: recipe coverage
against the vocabulary, the configured feature mix and the rejection reasons.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from service.store import diversity as sums
from service.store.diversity_sketch import (
    LENGTH_EDGES,
    NN_EDGES,
    NN_THRESHOLDS,
    OOV_EDGES,
    Sketch,
)
from service.store.models_diversity import ALL_STORIES

TOP = 10
RECIPE_ROLES = ("verb", "noun", "adjective")


def _share(part: float, whole: float) -> float | None:
    return round(part / whole, 6) if whole else None


def sketch_report(sketch: Sketch) -> dict[str, Any]:
    """Figures a sketch holds by itself: distinct-n, nearest-neighbour Jaccard, histograms."""
    checked = sum(sketch.nn_hist)
    above = {}
    for threshold in NN_THRESHOLDS:
        first = NN_EDGES.index(threshold)
        above[f"{threshold:.1f}"] = _share(sum(sketch.nn_hist[first:]), checked)
    mean = None
    if checked:  # bucket midpoints; the 1.0 bucket is exactly 1
        mids = [(a + b) / 2 for a, b in itertools.pairwise(NN_EDGES)] + [1.0]
        mean = round(sum(m * c for m, c in zip(mids, sketch.nn_hist, strict=True)) / checked, 4)
    present = {k: v for k, v in sketch.features.items() if k}
    return {
        "stories": sketch.stories,
        "words": sketch.words,
        "mean_words": round(sketch.words / sketch.stories, 2) if sketch.stories else None,
        "distinct": {k: None if v is None else round(v, 4) for k, v in sketch.distinct().items()},
        "nearest_neighbour": {
            "edges": list(NN_EDGES),
            "counts": list(sketch.nn_hist),
            "checked": checked,
            "share_at_least": above,
            "mean_bucketed": mean,
        },
        "length": {"edges_words": list(LENGTH_EDGES), "counts": list(sketch.length_hist)},
        "vocabulary_share": {
            "edges_oov_share": list(OOV_EDGES),
            "counts": list(sketch.vocab_hist),
            "scored": sum(sketch.vocab_hist),
        },
        "features_actual": {name: _share(n, sketch.stories) for name, n in sorted(present.items())},
        "no_feature": _share(sketch.features.get("", 0), sketch.stories),
        "openings": {
            "distinct": len([1 for kind, _ in sketch.terms if kind == "opening"]),
            "top": [
                {"text": term, "count": n, "share": _share(n, sketch.stories)}
                for (kind, term), n in sketch.terms.most_common()
                if kind == "opening"
            ][:TOP],
        },
    }


def _configured_mix(configs: list[tuple[dict[str, Any] | None, int]]) -> dict[str, float]:
    """Feature probabilities the jobs asked for, weighted by each job's stories (equally
    while none has stories)."""
    from vocab import FEATURES
    from vocab.sampler import DEFAULT_FEATURE_PROBS, DEFAULT_OTHER_FEATURE_PROB

    stories = sum(n for _, n in configs)
    weights = [n if stories else 1 for _, n in configs]
    out: dict[str, float] = {}
    for feature in FEATURES:
        default = DEFAULT_FEATURE_PROBS.get(feature.name, DEFAULT_OTHER_FEATURE_PROB)
        probs = [float((p or {}).get(feature.name, default)) for p, _ in configs]
        out[feature.name] = round(
            sum(p * w for p, w in zip(probs, weights, strict=True)) / sum(weights), 6
        )
    return out


async def _rejections(session: AsyncSession, job_id: uuid.UUID | None) -> dict[str, int]:
    rows = await session.execute(
        text(
            "SELECT e.key, SUM(e.value::bigint)::bigint "
            "FROM rollups_minute, jsonb_each_text(rejections_by_reason) AS e "
            "WHERE CAST(:job AS uuid) IS NULL OR job_id = CAST(:job AS uuid) "
            "GROUP BY 1 ORDER BY 2 DESC, 1"
        ),
        {"job": job_id},
    )
    return {reason: int(n) for reason, n in rows}


async def diversity_report(
    *, session: AsyncSession, job_id: uuid.UUID | None = None
) -> dict[str, Any]:
    """Every diversity figure of one job (or of all stories when job_id is None)."""
    from service.store.vocabularies import job_vocabulary
    from vocab import default_vocabulary

    scope = job_id or ALL_STORIES
    sketch = await sums.read_sketch(session=session, scope=scope) or Sketch()
    report = sketch_report(sketch)
    top_openings = await sums.top_terms(session=session, scope=scope, kind="opening", limit=TOP)
    distinct_terms = await sums.term_counts(session=session, scope=scope)
    report["openings"] = {
        "distinct": distinct_terms["opening"],
        "top": [
            {"text": t, "count": n, "share": _share(n, sketch.stories)} for t, n in top_openings
        ],
    }
    # A job's coverage is of the words it drew from: its own vocabulary when it has one.
    custom = await job_vocabulary(session=session, job_id=job_id) if job_id else None
    vocabulary = custom or default_vocabulary()
    coverage = {}
    for role in RECIPE_ROLES:
        words = {w.lower() for w in vocabulary.by_role(role)}
        used = await sums.used_words(session=session, scope=scope, kind=role)
        most = await sums.top_terms(session=session, scope=scope, kind=role, limit=5)
        least = await sums.top_terms(session=session, scope=scope, kind=role, limit=5, least=True)
        in_vocab = len(used & words)
        coverage[role] = {
            "used": len(used),
            "vocabulary": len(words),
            "coverage": _share(in_vocab, len(words)),
            "most_used": [{"word": w, "count": n} for w, n in most],
            "least_used": [{"word": w, "count": n} for w, n in least],
            "unused_examples": sorted(words - used)[:5],
        }
    configs = await sums.job_configuration(session=session, job_id=job_id)
    configured = _configured_mix(configs) if configs else {}
    report["recipe_coverage"] = coverage
    report["features"] = [
        {
            "feature": name,
            "configured": configured.get(name),
            "actual": report["features_actual"].get(name, 0.0 if sketch.stories else None),
        }
        for name in sorted(set(configured) | set(report["features_actual"]))
    ]
    report["rejections_by_reason"] = await _rejections(session, job_id)
    report["scope"] = "job" if job_id else "all"
    report["job_id"] = str(job_id) if job_id else None
    report["terms_distinct"] = distinct_terms
    return report
