"""Seeded recipe sampling."""

from collections import Counter

import pytest

from vocab import FEATURES, Recipe, RecipeSampler, Vocabulary, default_vocabulary


def test_recipe_is_deterministic_and_order_independent():
    forward = [RecipeSampler().recipe(7, i) for i in range(50)]
    sampler = RecipeSampler()
    backward = [sampler.recipe(7, i) for i in reversed(range(50))][::-1]
    assert forward == backward
    assert RecipeSampler().recipe(7, 3) == forward[3]
    assert RecipeSampler().recipe(8, 3) != forward[3] or RecipeSampler().recipe(8, 4) != forward[4]
    assert len(set(forward)) == 50


def test_recipe_words_have_their_roles():
    vocabulary = default_vocabulary()
    sampler = RecipeSampler()
    for index in range(300):
        recipe = sampler.recipe(1, index)
        assert recipe.verb in vocabulary.verbs
        assert recipe.noun in vocabulary.nouns
        assert recipe.adjective in vocabulary.adjectives
        assert len({recipe.verb, recipe.noun, recipe.adjective}) == 3
        names = [f.name for f in FEATURES]
        assert list(recipe.features) == sorted(recipe.features, key=names.index)


def test_default_feature_distribution():
    sampler = RecipeSampler()
    n = 4000
    counts = Counter(f for i in range(n) for f in sampler.recipe(0, i).features)
    assert abs(counts["Dialogue"] / n - 0.5) < 0.03
    assert abs(counts["Twist"] / n - 0.25) < 0.03
    assert abs(counts["BadEnding"] / n - 0.1) < 0.02
    empty = sum(1 for i in range(n) if not sampler.recipe(0, i).features)
    # Independent draws: P(no feature) = 0.5 * 0.9 * 0.85 * 0.9 * 0.75 * 0.8.
    assert abs(empty / n - 0.2066) < 0.03


def test_configured_feature_probabilities():
    sampler = RecipeSampler(
        feature_probs={
            "Dialogue": 1.0,
            "Twist": 0.0,
            "BadEnding": 0.0,
            "MoralValue": 0.0,
            "Foreshadowing": 0.0,
            "Conflict": 0.0,
        }
    )
    assert {sampler.recipe(3, i).features for i in range(100)} == {("Dialogue",)}
    with pytest.raises(ValueError, match="unknown feature 'Romance'"):
        RecipeSampler(feature_probs={"Romance": 0.5})
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        RecipeSampler(feature_probs={"Dialogue": 1.5})


def test_custom_vocabulary():
    vocabulary = Vocabulary(nouns=("cow", "hen"), verbs=("milk",), adjectives=("muddy",))
    sampler = RecipeSampler(vocabulary, feature_probs={"Dialogue": 0.0})
    recipes = [sampler.recipe(0, i) for i in range(20)]
    assert {r.verb for r in recipes} == {"milk"}
    assert {r.noun for r in recipes} == {"cow", "hen"}
    assert all("Dialogue" not in r.features for r in recipes)


def test_recipe_dict_round_trip():
    recipe = Recipe(verb="hang", noun="foot", adjective="cute", features=("Dialogue",))
    data = recipe.to_dict()
    assert data == {"verb": "hang", "noun": "foot", "adjective": "cute", "features": ["Dialogue"]}
    assert Recipe.from_dict(data) == recipe
    assert recipe.words == ("hang", "foot", "cute")
    with pytest.raises(ValueError, match="'noun'"):
        Recipe.from_dict({"verb": "hang", "adjective": "cute"})
