"""Agreement between several judges on the same completions: Spearman's rho per category
against the first judge, and Krippendorff's alpha (interval) across all of them."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), as Spearman's rho needs."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho; None with fewer than 3 pairs or when either side is constant."""
    if len(x) != len(y) or len(x) < 3:
        return None
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def krippendorff_alpha(units: Sequence[Sequence[float | None]]) -> float | None:
    """Interval alpha = 1 - D_o / D_e over units (one list of ratings per completion).

    Ratings may be missing (None); units with fewer than two ratings carry no information.
    """
    pairable = [[v for v in u if v is not None] for u in units]
    pairable = [u for u in pairable if len(u) >= 2]
    n = sum(len(u) for u in pairable)
    if n < 2:
        return None
    observed = sum(
        sum((a - b) ** 2 for a, b in itertools.permutations(u, 2)) / (len(u) - 1) for u in pairable
    )
    values = np.asarray([v for u in pairable for v in u], float)
    expected = float(((values[:, None] - values[None, :]) ** 2).sum()) / (n - 1)
    if expected == 0:
        return 1.0 if observed == 0 else None  # everyone gave one value: nothing to disagree on
    return 1.0 - observed / expected


def judge_agreement(
    names: list[str], scores: list[list[dict | None]], categories: Sequence[str]
) -> dict:
    """`scores[j][i]`: judge j's scores for completion i (None when unreadable)."""
    out: dict = {"judges": names, "categories": {}}
    for c in categories:
        units = [[(s or {}).get(c) for s in col] for col in zip(*scores, strict=True)]
        row: dict = {"alpha": krippendorff_alpha(units), "spearman_vs_first": {}}
        for j, name in enumerate(names[1:], start=1):
            both = [(u[0], u[j]) for u in units if u[0] is not None and u[j] is not None]
            row["spearman_vs_first"][name] = spearman([a for a, _ in both], [b for _, b in both])
            row.setdefault("n", {})[name] = len(both)
        row["means"] = {
            name: (
                float(np.mean(vals))
                if (vals := [u[j] for u in units if u[j] is not None])
                else None
            )
            for j, name in enumerate(names)
        }
        out["categories"][c] = row
    return out
