"""Words of any script, files with a byte-order mark, and a vocabulary's name and hash."""

import json

import pytest

from vocab import (
    VocabError,
    default_vocabulary,
    load_vocabulary,
    vocabulary_from_words,
    word_problem,
)

BOM = b"\xef\xbb\xbf"


def test_cafe_and_other_scripts_load(tmp_path):
    path = tmp_path / "cafe.txt"
    path.write_text("café noun\nnaïve adjective\nмолоко noun\nनमस्ते verb\nÄrger noun\n")
    vocabulary = load_vocabulary(path)
    assert vocabulary.nouns == ("café", "молоко", "Ärger")
    assert vocabulary.verbs == ("नमस्ते",)  # vowel signs are combining marks
    assert vocabulary.adjectives == ("naïve",)


def test_a_decomposed_accent_is_the_same_word(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("café noun\ncafe\u0301 noun\nrun verb\nbig adjective\n")
    with pytest.raises(VocabError) as caught:
        load_vocabulary(path)
    assert caught.value.line == 2 and "duplicate noun 'café'" in caught.value.problem


@pytest.mark.parametrize(
    "word", ["ice cream", "c0w", "²", "x²", "dog!", "-dog", "dog-", "a--b", "\u0301e", "dog_s"]
)
def test_non_words_are_still_refused(word):
    assert word_problem(word) is not None


@pytest.mark.parametrize("word", ["ice-cream", "o'clock", "x-ray", "Straße", "éclair", "ñu"])
def test_words(word):
    assert word_problem(word) is None


def test_non_word_in_a_file_names_its_line(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text("nouns:\n  - café\n  - ice cream\nverbs: [run]\nadjectives: [big]\n")
    with pytest.raises(VocabError) as caught:
        load_vocabulary(path)
    assert caught.value.line == 3
    assert caught.value.problem == "'ice cream' is not a single word (letters, '-' or ''' only)"


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("v.txt", "apple noun\nrun verb\nbig adjective\n"),
        ("v.yaml", "nouns: [apple]\nverbs: [run]\nadjectives: [big]\n"),
        ("v.json", '{"nouns": ["apple"], "verbs": ["run"], "adjectives": ["big"]}'),
    ],
)
def test_files_with_a_byte_order_mark_load(tmp_path, name, body):
    path = tmp_path / name
    path.write_bytes(BOM + body.encode())
    vocabulary = load_vocabulary(path)
    assert vocabulary.nouns == ("apple",) and vocabulary.verbs == ("run",)


def test_hash_is_of_the_words_not_their_order_or_format(tmp_path):
    txt = tmp_path / "farm.txt"
    txt.write_text("hen noun\ncow noun\nmilk verb\nmuddy adjective\n")
    data = {"name": "my farm", "nouns": ["cow", "hen"], "verbs": ["milk"], "adjectives": ["muddy"]}
    js = tmp_path / "other.json"
    js.write_text(json.dumps(data))
    from_txt, from_json = load_vocabulary(txt), load_vocabulary(js)
    assert from_txt.name == "farm" and from_json.name == "my farm"
    assert from_txt.sha256 == from_json.sha256
    assert len(from_txt.sha256) == 64 and from_txt.sha256 != default_vocabulary().sha256
    api = vocabulary_from_words(
        {"noun": ["hen", "cow"], "verb": ["milk"], "adjective": ["muddy"]}, name="x"
    )
    assert api.sha256 == from_txt.sha256
    assert api.identity() == {
        "name": "x",
        "sha256": from_txt.sha256,
        "noun": 2,
        "verb": 1,
        "adjective": 1,
    }
    js.write_text(json.dumps({**data, "verbs": ["milk", "feed"]}))
    assert load_vocabulary(js).sha256 != from_txt.sha256


def test_an_empty_name_is_refused(tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text("name: ''\nnouns: [cow]\nverbs: [milk]\nadjectives: [muddy]\n")
    with pytest.raises(VocabError) as caught:
        load_vocabulary(path)
    assert caught.value.line == 1 and "name" in caught.value.problem


def test_words_by_role_are_checked_and_normalised():
    vocabulary = vocabulary_from_words(
        {"noun": ["cafe\u0301", "café", "tea"], "verb": ["run"], "adjective": ["big"]}, name="c"
    )
    assert vocabulary.nouns == ("café", "tea")
    with pytest.raises(ValueError, match=r"^noun\.1: 'ice cream' is not a single word"):
        vocabulary_from_words(
            {"noun": ["tea", "ice cream"], "verb": ["run"], "adjective": ["big"]}, name="c"
        )
    with pytest.raises(ValueError, match="at least one verb"):
        vocabulary_from_words({"noun": ["tea"], "verb": [], "adjective": ["big"]}, name="c")


def test_code_points_newer_than_this_python_continue_a_word():
    # Unassigned in this Python's Unicode database: perhaps a newer Unicode's mark or letter.
    assert word_problem("a\u20f3") is None
    assert word_problem("\u0378a") is not None  # a word starts with a letter this Python knows
    assert word_problem("a\ufdd0") is not None  # noncharacters never become letters
    assert word_problem("a\ue000") is not None  # private use


@pytest.mark.parametrize("line", ["ice cream noun", "ice cream\tnoun", "ice cream noun,verb"])
def test_a_two_word_entry_in_a_text_file_is_named_as_such(tmp_path, line):
    # Not "unknown role 'cream'": the space is inside the entry (a tab-separated column too).
    path = tmp_path / "v.txt"
    path.write_text(f"run verb\n{line}\nbig adjective\n")
    with pytest.raises(VocabError) as caught:
        load_vocabulary(path)
    assert caught.value.line == 2
    assert caught.value.problem.startswith("'ice cream' is not a single word")
    path.write_text("run verb\ndog nuon\n")
    with pytest.raises(VocabError, match="unknown role 'nuon'"):
        load_vocabulary(path)
