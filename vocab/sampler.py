"""Seeded story recipes: (verb, noun, adjective, features) derived from (seed, index) alone."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vocab.features import Feature
from vocab.vocabulary import Vocabulary, default_vocabulary

# Per-feature inclusion probabilities, each feature drawn independently. They approximate the
# feature shares of a 32-record sample of the real TinyStories_all_data (Dialogue in about half
# the prompts, Twist and Conflict next, BadEnding and Foreshadowing rare); about 22% of recipes
# get no feature, as in the real data where many prompts have none.
DEFAULT_FEATURE_PROBS: dict[str, float] = {
    "Dialogue": 0.5,
    "BadEnding": 0.1,
    "MoralValue": 0.15,
    "Foreshadowing": 0.1,
    "Twist": 0.25,
    "Conflict": 0.2,
}
# Probability for a custom feature that the probability table does not mention.
DEFAULT_OTHER_FEATURE_PROB = 0.2


@dataclass(frozen=True)
class Recipe:
    """What one story must contain."""

    verb: str
    noun: str
    adjective: str
    features: tuple[str, ...] = ()

    @property
    def words(self) -> tuple[str, str, str]:
        """The required words in the order the real metadata lists them: verb, noun, adjective."""
        return (self.verb, self.noun, self.adjective)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "verb": self.verb,
            "noun": self.noun,
            "adjective": self.adjective,
            "features": list(self.features),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        """Inverse of `to_dict`; ValueError naming the missing or wrong field."""
        values = {}
        for key in ("verb", "noun", "adjective"):
            value = data.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"recipe field {key!r} must be a non-empty string, got {value!r}")
            values[key] = value
        features = data.get("features", ())
        if isinstance(features, str) or not all(isinstance(f, str) for f in features):
            raise ValueError(f"recipe field 'features' must be a list of names, got {features!r}")
        return cls(features=tuple(features), **values)


def _rng(seed: int, index: int) -> random.Random:
    """An RNG that depends only on (seed, index), so recipes can be re-derived in any order."""
    digest = hashlib.sha256(f"tinystories-recipe:{seed}:{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


class RecipeSampler:
    """Draws recipes uniformly over the vocabulary with independently included features."""

    def __init__(
        self,
        vocabulary: Vocabulary | None = None,
        feature_probs: Mapping[str, float] | None = None,
        features: tuple[Feature, ...] | None = None,
    ) -> None:
        self.vocabulary = vocabulary if vocabulary is not None else default_vocabulary()
        self.features = tuple(features) if features is not None else self.vocabulary.features
        known = {f.name for f in self.features}
        probs = dict(feature_probs) if feature_probs is not None else {}
        for name, prob in probs.items():
            if name not in known:
                raise ValueError(
                    f"unknown feature {name!r} in feature_probs (known: {', '.join(sorted(known))})"
                )
            if not isinstance(prob, int | float) or not 0.0 <= float(prob) <= 1.0:
                raise ValueError(f"probability of feature {name!r} must be in [0, 1], got {prob!r}")
        self.feature_probs: dict[str, float] = {
            f.name: float(
                probs.get(f.name, DEFAULT_FEATURE_PROBS.get(f.name, DEFAULT_OTHER_FEATURE_PROB))
            )
            for f in self.features
        }
        # Sorted once so the draw does not depend on the vocabulary file's line order.
        self._verbs = tuple(sorted(set(self.vocabulary.verbs)))
        self._nouns = tuple(sorted(set(self.vocabulary.nouns)))
        self._adjectives = tuple(sorted(set(self.vocabulary.adjectives)))

    def recipe(self, seed: int, index: int) -> Recipe:
        """The recipe number `index` of the stream `seed`; same inputs, same recipe."""
        rng = _rng(seed, index)
        verb = rng.choice(self._verbs)
        noun = rng.choice(self._nouns)
        # A word with several roles must not fill two slots of one recipe.
        for _ in range(8):
            if noun != verb:
                break
            noun = rng.choice(self._nouns)
        adjective = rng.choice(self._adjectives)
        for _ in range(8):
            if adjective not in (verb, noun):
                break
            adjective = rng.choice(self._adjectives)
        # One draw per feature in declaration order keeps the features in a stable order.
        chosen = tuple(f.name for f in self.features if rng.random() < self.feature_probs[f.name])
        return Recipe(verb=verb, noun=noun, adjective=adjective, features=chosen)

    def recipes(self, seed: int, start: int, count: int) -> list[Recipe]:
        """Recipes `start` .. `start + count - 1` of stream `seed`."""
        return [self.recipe(seed, i) for i in range(start, start + count)]
