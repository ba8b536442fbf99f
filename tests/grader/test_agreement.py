"""Judge agreement statistics against published values."""

from __future__ import annotations

import pytest

from grader.agreement import judge_agreement, krippendorff_alpha, spearman

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 coders, 12 units.
_ = None
CODERS = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, _, _, _],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, _, 3],
    [_, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, _],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, _],
]


def test_krippendorff_alpha_interval_matches_the_published_example():
    units = [list(u) for u in zip(*CODERS, strict=True)]
    assert krippendorff_alpha(units) == pytest.approx(0.849, abs=0.001)
    assert krippendorff_alpha([[5, 5], [5, 5]]) == 1.0
    assert krippendorff_alpha([[1], [2]]) is None


def test_spearman_with_ties_and_degenerate_inputs():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)
    assert spearman([1, 1, 1], [1, 2, 3]) is None
    assert spearman([1, 2], [1, 2]) is None


def test_judge_agreement_table():
    a = [{"grammar": g} for g in (8, 6, 4, 9, 2)]
    b = [{"grammar": g} for g in (7, 6, 5, 9, 3)]
    c = [{"grammar": g} for g in (2, 9, 8, 1, 7)]
    res = judge_agreement(["a", "b", "c"], [a, b, [*c[:4], None]], ["grammar"])
    g = res["categories"]["grammar"]
    assert g["spearman_vs_first"]["b"] == pytest.approx(1.0)
    assert g["spearman_vs_first"]["c"] < 0 and g["n"]["c"] == 4
    assert -1 < g["alpha"] < 0.5
    assert g["means"]["a"] == pytest.approx(5.8)
