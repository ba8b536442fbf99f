"""Means with bootstrap confidence intervals over prompts, distinct-n, judge noise."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def mean_or_none(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(vals)) if vals else None


def bootstrap_ci(
    per_prompt: Sequence[float], *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap of the mean, resampling prompts (the unit the paper averages over)."""
    x = np.asarray([v for v in per_prompt if v is not None and not math.isnan(v)], dtype=float)
    if x.size == 0:
        return None
    if x.size == 1:
        return float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def summarize(per_prompt: Sequence[float | None], *, seed: int = 0) -> dict:
    vals = [v for v in per_prompt if v is not None]
    ci = bootstrap_ci(vals, seed=seed)
    return {
        "mean": mean_or_none(vals),
        "ci95": list(ci) if ci else None,
        "n_prompts": len(vals),
    }


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Unique n-grams over all n-grams across the texts (whitespace tokens, lowercased)."""
    total = 0
    seen: set[tuple[str, ...]] = set()
    for t in texts:
        toks = t.lower().split()
        grams = [tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else None


def mean_abs_difference(pairs: Sequence[tuple[float, float]]) -> float | None:
    if not pairs:
        return None
    return float(np.mean([abs(a - b) for a, b in pairs]))
