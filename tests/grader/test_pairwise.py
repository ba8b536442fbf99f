"""Pairwise mode: both orders judged, consistent verdicts win, inconsistent ones are ties."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from grader.judge import Judgment
from grader.pairwise import outcome, summarize_pairs
from grader.parsing import parse_verdict
from tinystories.cli import app


def _v(pref: float | None) -> Judgment:
    if pref is None:
        return Judgment("k", {}, None, "parse_failure", 2, "??")
    return Judgment("k", {"preference": pref}, None, "strict", 1, "")


@pytest.mark.parametrize(
    ("first", "swapped", "expected"),
    [
        (1.0, 0.0, "a"),  # A first: A better; B first: the second one (A) better
        (0.0, 1.0, "b"),
        (0.5, 0.5, "tie"),
        (1.0, 1.0, "inconsistent"),  # always the first position: position bias
        (1.0, 0.5, "inconsistent"),
        (None, 1.0, "unreadable"),
    ],
)
def test_outcome_of_both_orders(first, swapped, expected):
    assert outcome(_v(first), _v(swapped)) == expected


def test_summary_counts_and_win_rate():
    rows = [
        {"outcome": o, "verdict_a_first": f, "verdict_b_first": s}
        for o, f, s in [
            ("a", 1.0, 0.0),
            ("a", 1.0, 0.0),
            ("b", 0.0, 1.0),
            ("inconsistent", 1.0, 1.0),
            ("unreadable", None, None),
        ]
    ]
    s = summarize_pairs(rows)
    assert (s["a_wins"], s["b_wins"], s["inconsistent"], s["unreadable"]) == (2, 1, 1, 1)
    assert s["win_rate_a"] == pytest.approx(2.5 / 4)
    assert s["ci95"][0] <= s["win_rate_a"] <= s["ci95"][1]
    assert s["first_position_preferred"] == pytest.approx(5 / 8)


def test_verdict_parsing():
    assert parse_verdict("A is more consistent. [[A]]").scores == {"preference": 1.0}
    assert parse_verdict('Format: "[[A]]", "[[B]]" or "[[C]]". Verdict: [[C]]').scores == {
        "preference": 0.5
    }
    assert parse_verdict("Completion B is clearly better.").scores == {"preference": 0.0}
    assert parse_verdict("Verdict: a tough call") is None
    assert parse_verdict("") is None


def test_model_against_reference_and_against_itself(model_dir, export_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    out = tmp_path / "pw"
    base = ["grade-pairwise", "--out", str(out), "--n", "3", "--max-new-tokens", "24"]
    res = CliRunner().invoke(app, [*base, "--model", str(model_dir), "--data", str(export_dir)])
    assert res.exit_code == 0, res.output
    result = json.loads((out / "pairwise.json").read_text())
    s = result["summary"]
    assert result["b"] == "reference" and s["pairs"] == 3 and s["unreadable"] == 0
    # A random-weight model loses to the true endings, in both orders.
    assert s["b_wins"] == 3 and s["win_rate_a"] == 0.0
    assert "win rate 0.00 (sim)" in res.output and result["judge"]["simulator"]
    # The same model twice: identical completions, so every pair is a tie.
    same = CliRunner().invoke(app, [*base, "--model", str(model_dir), "--model", str(model_dir)])
    assert same.exit_code == 0, same.output
    same_result = json.loads((out / "pairwise.json").read_text())
    s2 = same_result["summary"]
    assert s2["ties"] == 3 and s2["win_rate_a"] == 0.5
    # Two names, not "tiny-64x2 vs tiny-64x2".
    assert (same_result["a"], same_result["b"]) == ("tiny-64x2", "tiny-64x2-2")
    bad = CliRunner().invoke(app, ["grade-pairwise", "--out", str(out), "--model", str(model_dir)])
    assert bad.exit_code == 2 and "error:" in bad.stderr
