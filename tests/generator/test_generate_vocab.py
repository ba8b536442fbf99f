"""`tinystories generate --vocab FILE`: recipes from the file, stories checked against it."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from generator import cli
from generator.checks import StoryChecker, story_words
from vocab import default_vocabulary, load_vocabulary, vocabulary_from_words

app = typer.Typer()
cli.register(app)
runner = CliRunner()

SPACE = """\
name: space
nouns: [rocket, moon, café]
verbs: [fly, land]
adjectives: [shiny, quiet]
features:
  - Dialogue
  - {name: Stars, phrase: the story mentions the stars}
"""


@pytest.fixture
def no_provider_env(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generate_draws_from_and_checks_against_the_file(tmp_path, no_provider_env) -> None:
    vocab_file = tmp_path / "space.yaml"
    vocab_file.write_text(SPACE)
    custom = load_vocabulary(vocab_file)
    out = tmp_path / "run"
    args = ["generate", "--n", "10", "--out", str(out), "--seed", "3", "--vocab", str(vocab_file)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1].endswith("vocabulary=space")
    assert "vocabulary space" in result.stderr and custom.sha256 in result.stderr
    rows = _rows(out / "stories.jsonl")
    assert len(rows) == 10
    checker = StoryChecker(custom)
    default_oov: set[str] = set()
    for row in rows:
        recipe = row["recipe"]
        assert recipe["noun"] in custom.nouns and recipe["verb"] in custom.verbs
        assert recipe["adjective"] in custom.adjectives
        assert set(recipe["features"]) <= {"Dialogue", "Stars"}
        assert ("the story mentions the stars" in row["prompt"]) == ("Stars" in recipe["features"])
        assert row["vocabulary"] == {"name": "space", "sha256": custom.sha256}
        # The simulator writes the prompt's words, "café" included, in its stories.
        assert "missing_words" not in row["checks"]["rejections"], row["text"]
        words = [recipe["verb"], recipe["noun"], recipe["adjective"]]
        expected = checker.check(row["text"], finish_reason="stop", required_words=words)
        assert row["checks"] == expected.to_dict()
        default_oov |= set(row["checks"]["details"].get("oov_words", []))
    assert any(r["recipe"]["noun"] == "café" for r in rows)
    # Judged against the file: the simulator's everyday filler words of the packaged list
    # are outside this vocabulary.
    assert default_oov & default_vocabulary().words
    # vocabulary.json is itself a vocabulary file: the run can be repeated from it.
    recorded = load_vocabulary(out / "vocabulary.json")
    assert recorded.sha256 == custom.sha256 and recorded.name == "space"
    saved = json.loads((out / "vocabulary.json").read_text())
    assert saved["_sha256"] == custom.sha256 and saved["_size"] == {
        "noun": 3,
        "verb": 2,
        "adjective": 2,
    }


def test_a_bad_vocabulary_file_is_one_line_before_anything_runs(tmp_path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("moon noun\nice cream noun\n")
    out = tmp_path / "run"
    result = runner.invoke(app, ["generate", "--n", "3", "--out", str(out), "--vocab", str(bad)])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {bad}, line 2: 'ice cream' is not a single word")
    assert not out.exists()
    bad.write_text("moon noun\nfly verb\nc0ol adjective\n")
    result = runner.invoke(app, ["generate", "--n", "3", "--out", str(out), "--vocab", str(bad)])
    assert result.exit_code == 2 and "'c0ol' is not a single word" in result.stderr
    missing = tmp_path / "nope.yaml"
    args = ["generate", "--n", "3", "--out", str(out), "--vocab", str(missing)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: {missing}: file not found"
    assert not out.exists()


def test_checks_read_words_of_any_script() -> None:
    assert story_words("Le café était grand. It’s a नमस्ते day, cafe\u0301!") == [
        "Le",
        "café",
        "était",
        "grand",
        "It’s",
        "a",
        "नमस्ते",
        "day",
        "café",
    ]
    vocabulary = vocabulary_from_words(
        {"noun": ["café"], "verb": ["नमस्ते"], "adjective": ["grand"]}, name="mixed"
    )
    checker = StoryChecker(vocabulary)
    text = "Le cafe\u0301 est grand. नमस्ते! " * 3
    result = checker.check(text, required_words=["नमस्ते", "café", "grand"])
    assert "missing_words" not in result.rejections
    missing = checker.check("Un thé.", required_words=["café"])
    assert missing.details["missing_words"] == ["café"]
    # English text reads as it always did.
    english = "Lily's ice-cream fell. She hung it up."
    assert story_words(english) == ["Lily's", "ice-cream", "fell", "She", "hung", "it", "up"]
