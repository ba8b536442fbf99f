"""The packaged vocabulary and user vocabulary files."""

import json
from pathlib import Path

import pytest

from vocab import (
    FEATURES,
    Feature,
    VocabError,
    Vocabulary,
    basic_words,
    default_vocabulary,
    load_vocabulary,
)

DATA = Path(__file__).parent / "data"


def test_default_vocabulary_size_and_roles():
    vocabulary = default_vocabulary()
    assert 1400 <= len(vocabulary.words) <= 1603
    assert len(vocabulary.nouns) > len(vocabulary.verbs) > len(vocabulary.adjectives) > 150
    # A word may have several roles.
    assert vocabulary.roles("zip") == ("noun", "verb")
    assert vocabulary.roles("cute") == ("adjective",)
    assert vocabulary.roles("hang") == ("verb",)
    assert "foot" in vocabulary.nouns
    assert vocabulary.features == FEATURES


def test_default_vocabulary_drops_junk():
    words = default_vocabulary().words
    for junk in ("True", "TV", "Tuesday", "Wednesday", "Sunday", "yet"):
        assert junk not in words
    assert all(w == w.lower() for w in words)


def test_agrees_with_real_role_examples():
    examples = json.loads((DATA / "vocab_role_examples.json").read_text())
    vocabulary = default_vocabulary()
    total = agree = 0
    for role in ("noun", "verb", "adjective"):
        for word in examples[role]:
            total += 1
            agree += role in vocabulary.roles(word)
    assert total == 227
    assert agree / total >= 0.95


def test_role_examples_file_loads_as_a_vocabulary():
    # The real examples use singular role keys and a "_note" entry, both accepted.
    vocabulary = load_vocabulary(DATA / "vocab_role_examples.json")
    assert len(vocabulary.nouns) == 102
    assert len(vocabulary.verbs) == 93
    assert len(vocabulary.adjectives) == 32
    assert vocabulary.roles("zip") == ("noun", "verb")


def test_basic_words_cover_function_words():
    words = basic_words()
    for word in ("the", "and", "she", "happy", "go", "mom"):
        assert word in words
    assert "macroeconomic" not in words


def test_load_txt_with_features(tmp_path):
    path = tmp_path / "farm.txt"
    path.write_text(
        "# a farm vocabulary\n"
        "cow noun\n"
        "plough noun, verb\n"
        "muddy\tadjective\n"
        "feature: Dialogue\n"
        "feature: Animals | the story has a farm animal in it\n"
    )
    vocabulary = load_vocabulary(path)
    assert vocabulary == Vocabulary(
        nouns=("cow", "plough"),
        verbs=("plough",),
        adjectives=("muddy",),
        features=(FEATURES[0], Feature("Animals", "the story has a farm animal in it")),
    )
    assert vocabulary.stats() == {
        "noun": 2,
        "verb": 1,
        "adjective": 1,
        "features": ["Dialogue", "Animals"],
    }


def test_load_yaml_and_json(tmp_path):
    yaml_path = tmp_path / "v.yaml"
    yaml_path.write_text("nouns: [cow, hen]\nverbs: [milk]\nadjectives: [muddy]\n")
    assert load_vocabulary(yaml_path).nouns == ("cow", "hen")
    assert load_vocabulary(yaml_path).features == FEATURES
    json_path = tmp_path / "v.json"
    json_path.write_text(
        json.dumps(
            {"noun": ["cow"], "verb": ["milk"], "adjective": ["muddy"], "features": ["Twist"]}
        )
    )
    loaded = load_vocabulary(json_path)
    assert loaded.verbs == ("milk",)
    assert [f.name for f in loaded.features] == ["Twist"]


@pytest.mark.parametrize(
    ("name", "text", "line", "problem"),
    [
        ("bad.txt", "cow noun\nhen noun\nmilk verbb\n", 3, "unknown role 'verbb'"),
        ("bad.txt", "cow noun\ncow noun\n", 2, "duplicate noun 'cow' (first at line 1)"),
        ("bad.txt", "cow noun\nmilk\n", 2, "'milk' has no role"),
        ("bad.txt", "cow noun\nfeature: Romance\n", 2, "unknown feature 'Romance'"),
        ("bad.txt", "big cow noun\n", 1, "'big cow' is not a single word"),
        ("bad.txt", "c0w noun\n", 1, "'c0w' is not a single word"),
        ("bad.yaml", "nouns:\n  - cow\n  - ''\nverbs: [milk]\n", 3, "empty word in the noun list"),
        ("bad.yaml", "nouns: [cow]\ncolours: [red]\n", 2, "unknown role 'colours'"),
        ("bad.yaml", "nouns: [cow\n", 2, "invalid YAML"),
        ("bad.json", '{"nouns": ["cow"],\n "verbs": ["milk", "milk"]}', 2, "duplicate verb 'milk'"),
        ("bad.json", '{"nouns": ["cow"],\n "verbs": [milk]}', 2, "invalid JSON"),
        (
            "bad.json",
            '{"nouns": ["cow"], "verbs": ["milk"], "adjectives": ["red"],\n'
            ' "features": ["Dialogue", "Spooky"]}',
            2,
            "unknown feature 'Spooky'",
        ),
    ],
)
def test_bad_file_names_file_line_and_problem(tmp_path, name, text, line, problem):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(VocabError) as caught:
        load_vocabulary(path)
    error = caught.value
    assert error.file == str(path)
    assert error.line == line
    assert problem in error.problem
    assert str(error).startswith(f"{path}, line {line}: ")


def test_missing_role_and_missing_file(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("cow noun\nmilk verb\n")
    with pytest.raises(VocabError, match="no adjectives") as caught:
        load_vocabulary(path)
    assert caught.value.line is None
    with pytest.raises(VocabError, match="file not found"):
        load_vocabulary(tmp_path / "absent.yaml")
    with pytest.raises(VocabError, match=r"unknown file type '\.csv'"):
        load_vocabulary(tmp_path / "v.csv")
