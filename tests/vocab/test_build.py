"""The scripts that built the packaged word lists, on a tiny corpus."""

from collections import Counter

from vocab.build_basic_words import build as build_basic
from vocab.build_words import MANUAL, _corpus_counts, assign_roles

CORPUS = (
    "The rock was big. She sat on the rock. Tom liked to rock the baby. He rocked it. "
    "Mom will rock the chair. They were rocking. "
    "The dog was happy. A dog ran. The dog barked. "
    + "She wanted to play. They played and played. He was playing. " * 3
    + "It was a blue day. The sky was blue and the sea was very blue."
)


def test_assign_roles_from_lexicon_and_corpus():
    counts = _corpus_counts(CORPUS)
    # Noun and verb in the lexicon, both uses seen: both roles.
    assert assign_roles("rock", *counts) == ("noun", "verb")
    # Only ever a verb here: the noun reading is dropped.
    assert assign_roles("play", *counts) == ("verb",)
    # Lexicon says noun and verb, the corpus only shows the noun.
    assert assign_roles("dog", *counts) == ("noun",)
    assert assign_roles("blue", *counts) == ("adjective",)
    # Participles serve as adjectives.
    assert assign_roles("scared", *counts) == ("adjective",)
    # Not an English word: dropped. Manual entries win.
    assert assign_roles("blorf", *counts) is None
    assert assign_roles("True", *counts) is None
    assert MANUAL["True"] is None
    assert assign_roles("yummy", *counts) == ("adjective",)


def test_basic_words_keep_lower_case_lemmas_seen_often():
    corpus = "<|endoftext|>".join(
        ["Lily ran to the park.", "Lily runs home.", "Then the dog runs.", "A zebra."]
    )
    words = build_basic(corpus, stories=3, min_stories=2)
    assert "run" in words and "the" in words  # "ran" and "runs" both count for "run"
    assert "lily" not in words  # names only appear capitalised
    assert "zebra" not in words  # beyond the first 3 stories
    assert "park" not in words  # in one story only
    assert Counter(words)["run"] == 1
