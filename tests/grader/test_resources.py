import pytest

from grader.parsing import answer_template, parse_template
from grader.resources import (
    GraderDataError,
    load_capability_suites,
    load_evaluation_prompts,
    load_rubric,
)


def test_packaged_evaluation_prompts_are_the_authors_44():
    prompts = load_evaluation_prompts()
    assert len(prompts) == 44
    assert prompts[0].startswith("Once upon a time, there lived a bunny in a field.")
    assert prompts[0].endswith("She was so weak she could")


def test_gpt_eval_rubric_is_the_papers_two_turns():
    r = load_rubric()
    assert r.version == "gpt-eval-v2"
    assert len(r.turns) == 2
    assert "The symbol *** marks the separator" in r.turns[0]
    assert "{beginning}***{completion}" in r.turns[0]
    assert r.turns[1].startswith("Now, grade the student's completion")
    assert set(r.age_groups) == set("ABCDEF")


def test_instruct_rubric_has_answer_template():
    r = load_rubric("instruct_rubric.yaml")
    template = answer_template(r.turns[-1])
    assert template == "Instruction following: <score>/10"
    assert parse_template("Instruction following: 9/10", template).scores == {
        "instruction_following": 9.0
    }


def test_capability_suites_every_item_has_a_rule():
    suites = load_capability_suites()
    assert suites.names() == ["knowledge", "reasoning", "context_tracking"]
    assert all(item.expect for item in suites.items)
    assert sum(item.supplied for item in suites.items) == 3
    only = load_capability_suites(only=["reasoning"])
    assert {i.suite for i in only.items} == {"reasoning"}
    with pytest.raises(GraderDataError, match="unknown suite"):
        load_capability_suites(only=["poetry"])


def test_empty_prompt_file_is_a_clear_error(tmp_path):
    empty = tmp_path / "p.yaml"
    empty.write_text("[]\n")
    with pytest.raises(GraderDataError, match="empty"):
        load_evaluation_prompts(empty)
    bad = tmp_path / "q.yaml"
    bad.write_text("a: 1\n")
    with pytest.raises(GraderDataError, match="list of prompt strings"):
        load_evaluation_prompts(bad)
