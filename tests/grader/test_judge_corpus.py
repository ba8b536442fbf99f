"""The judge-answer corpus: every answer that states its scores parses to exactly those."""

from __future__ import annotations

import re
from importlib import resources

import pytest
import yaml

from grader.parsing import CATEGORIES, parse_age, parse_gpt_eval, parse_template
from grader.resources import load_rubric

CORPUS = yaml.safe_load(
    resources.files("grader.data").joinpath("judge_answers.yaml").read_text(encoding="utf-8")
)
INSTRUCT_TEMPLATE = "Instruction following: <score>/10"


def _ids(rubric: str) -> list[dict]:
    return [a for a in CORPUS["answers"] if a["rubric"] == rubric]


def test_corpus_is_versioned_and_large_enough() -> None:
    answers = CORPUS["answers"]
    assert CORPUS["version"] and len(answers) >= 60
    assert len({a["id"] for a in answers}) == len(answers)
    assert {a["style"] for a in answers} >= {"GPT-4o", "Claude", "Llama-3-70B", "Qwen2.5"}
    assert sum(a["expect"] is None for a in answers) >= 8  # refusals, truncations, prose only
    # The rubric the judge sees asks for exactly what the corpus answers.
    assert "Instruction following: <score>/10" in load_rubric("instruct_rubric.yaml").turns[-1]


@pytest.mark.parametrize("case", _ids("gpt_eval"), ids=lambda a: a["id"])
def test_gpt_eval_answer(case: dict) -> None:
    parsed = parse_gpt_eval(case["answer"])
    if case["expect"] is None:
        assert parsed is None, parsed
        return
    assert parsed is not None, case["answer"]
    expect = case["expect"]
    assert parsed.scores == {c: expect[c] for c in CATEGORIES}
    assert parsed.age_group == expect["age"]


@pytest.mark.parametrize("case", _ids("instruct"), ids=lambda a: a["id"])
def test_instruct_answer(case: dict) -> None:
    parsed = parse_template(case["answer"], INSTRUCT_TEMPLATE)
    if case["expect"] is None:
        assert parsed is None, parsed
        return
    assert parsed is not None, case["answer"]
    assert parsed.scores == case["expect"]


@pytest.mark.parametrize(
    "text",
    [
        "The language is a bit simple.",
        "The package arrived and the message is a happy one; a teenage reader, an average page.",
        "Grammar: 8/10. Usage: A bit odd.",
        "Age: A story for children.",
        "The image is a dog; her age is unclear.",
    ],
)
def test_age_never_matches_inside_ordinary_words(text: str) -> None:
    assert parse_age(text) is None


def test_age_forms() -> None:
    assert parse_age("Age group: 4-5 (B)") == "B"
    assert parse_age("**Age group**: C") == "C"
    assert parse_age("Age group: **D** (8-9)") == "D"
    assert parse_age("Age group: (E)") == "E"
    assert parse_age("age group: 13-16") == "F"
    assert parse_age("Age group: 3 or under") == "A"


def test_parse_rate_over_the_corpus_is_complete() -> None:
    """The benchmark's parse_rate: share of answers stating every score that parse right."""
    stated = [a for a in CORPUS["answers"] if a["expect"] is not None]
    right = 0
    for a in stated:
        if a["rubric"] == "gpt_eval":
            p = parse_gpt_eval(a["answer"])
            ok = p is not None and p.scores == {c: a["expect"][c] for c in CATEGORIES}
        else:
            p = parse_template(a["answer"], INSTRUCT_TEMPLATE)
            ok = p is not None and p.scores == a["expect"]
        right += ok
    assert right == len(stated)
    assert not re.search(r"\bTODO\b", str(CORPUS))
