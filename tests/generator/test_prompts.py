"""Story and summary prompts from the versioned templates."""

import json
from pathlib import Path

import pytest

from generator.prompts import (
    DEFAULT_TEMPLATE_VERSION,
    PromptTemplate,
    PromptTemplateError,
    available_versions,
    load_template,
    render_story_prompt,
    render_summary_prompt,
)
from vocab import Feature, Recipe

REAL = json.loads((Path(__file__).parent / "data" / "real_prompts.json").read_text())["records"]


def test_story_prompt_reproduces_real_prompt_with_feature():
    recipe = Recipe(verb="hang", noun="foot", adjective="cute", features=("Dialogue",))
    assert REAL[0]["words"] == ["hang", "foot", "cute"]
    assert render_story_prompt(recipe) == REAL[0]["prompt"]


def test_story_prompt_reproduces_real_prompt_without_features():
    recipe = Recipe(verb="believe", noun="parade", adjective="bald")
    assert render_story_prompt(recipe, "v1") == REAL[1]["prompt"]
    assert "features" not in REAL[1]["prompt"]


def test_several_features_joined_with_comma():
    recipe = Recipe("ride", "work", "upset", ("Dialogue", "BadEnding", "MoralValue"))
    prompt = render_story_prompt(recipe)
    assert (
        " The story has the following features: the story should contain at least one dialogue, "
        "the story has a bad ending, the story has a moral value. Remember to only use simple "
        "words!\n\nPossible story:"
    ) in prompt
    assert prompt.endswith("Possible story:")


def test_unknown_feature_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown feature 'Romance'.*Dialogue"):
        render_story_prompt(Recipe("hang", "foot", "cute", ("Romance",)))


def test_custom_feature_set():
    recipe = Recipe("milk", "cow", "muddy", ("Farm",))
    prompt = render_story_prompt(recipe, features=(Feature("Farm", "it happens on a farm"),))
    assert "The story has the following features: it happens on a farm." in prompt


def test_summary_prompt_has_marker_then_story():
    story = "Tom had a red ball.\n\nHe lost it {in} the park."
    prompt = render_summary_prompt(f"\n{story}\n")
    assert prompt.endswith("\nStory to summarize:\n" + story)
    assert "one or two" in prompt


def test_versions_and_unknown_version():
    assert DEFAULT_TEMPLATE_VERSION == "v1"
    assert available_versions("story") == ["v1"]
    assert load_template("summary").kind == "summary"
    with pytest.raises(PromptTemplateError, match=r"unknown story template version 'v9'.*v1"):
        render_story_prompt(Recipe("a", "b", "c"), "v9")


def test_template_missing_placeholder_names_template_and_placeholder(tmp_path):
    path = tmp_path / "story-mine.yaml"
    path.write_text(
        'kind: story\nversion: mine\ntext: "Use the verb {verb} and the noun {noun}.'
        '{features_clause}"\nfeatures_clause: " Features: {features}."\n'
    )
    with pytest.raises(PromptTemplateError) as caught:
        render_story_prompt(Recipe("a", "b", "c"), str(path))
    assert str(caught.value) == f"template {path}: text is missing placeholder {{adjective}}"


def test_template_unknown_placeholder_and_kind():
    with pytest.raises(PromptTemplateError, match=r"unknown placeholder \{colour\}"):
        PromptTemplate.from_mapping({"kind": "summary", "text": "{story} {colour}"}, source="t1")
    with pytest.raises(PromptTemplateError, match=r"missing placeholder \{story\}"):
        PromptTemplate.from_mapping({"kind": "summary", "text": "no story"}, source="t2")
    with pytest.raises(PromptTemplateError, match="unknown kind 'poem'"):
        PromptTemplate.from_mapping({"kind": "poem", "text": "{story}"}, source="t3")


def test_user_template_file_renders(tmp_path):
    path = tmp_path / "story-short.yaml"
    path.write_text(
        'kind: story\ntext: "Story with {verb}/{noun}/{adjective}.{features_clause}"\n'
        'features_clause: " [{features}]"\nfeatures_separator: "; "\n'
    )
    recipe = Recipe("run", "dog", "red", ("Dialogue", "Twist"))
    assert render_story_prompt(recipe, str(path)) == (
        "Story with run/dog/red. [the story should contain at least one dialogue; "
        "something unexpected happens / there is a plot twist]"
    )
