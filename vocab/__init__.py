"""Child vocabulary, story features and the seeded recipe sampler (pure, no I/O beyond files)."""

from vocab.features import FEATURE_NAMES, FEATURES, Feature, feature_by_name
from vocab.sampler import DEFAULT_FEATURE_PROBS, Recipe, RecipeSampler
from vocab.vocabulary import (
    ROLES,
    VocabError,
    Vocabulary,
    basic_words,
    default_vocabulary,
    load_vocabulary,
    parse_vocabulary,
    vocabulary_from_words,
)
from vocab.word_rules import normalize_word, word_problem

__all__ = [
    "DEFAULT_FEATURE_PROBS",
    "FEATURES",
    "FEATURE_NAMES",
    "ROLES",
    "Feature",
    "Recipe",
    "RecipeSampler",
    "VocabError",
    "Vocabulary",
    "basic_words",
    "default_vocabulary",
    "feature_by_name",
    "load_vocabulary",
    "normalize_word",
    "parse_vocabulary",
    "vocabulary_from_words",
    "word_problem",
]
