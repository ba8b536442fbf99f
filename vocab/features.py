"""The six TinyStories story features and the phrasings the real generation prompts use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Feature:
    """A story feature: its label in the data and its phrasing inside a prompt."""

    name: str
    phrase: str


# Labels and phrasings exactly as in the real TinyStories_all_data prompts.
FEATURES: tuple[Feature, ...] = (
    Feature(name="Dialogue", phrase="the story should contain at least one dialogue"),
    Feature(name="BadEnding", phrase="the story has a bad ending"),
    Feature(name="MoralValue", phrase="the story has a moral value"),
    Feature(name="Foreshadowing", phrase="the narrative uses foreshadowing or setup and payoff"),
    Feature(name="Twist", phrase="something unexpected happens / there is a plot twist"),
    Feature(name="Conflict", phrase="the story has some form of conflict in it"),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)


def feature_by_name(name: str, features: tuple[Feature, ...] = FEATURES) -> Feature:
    """Return the feature called `name`; ValueError listing the known ones otherwise."""
    for feature in features:
        if feature.name == name:
            return feature
    known = ", ".join(f.name for f in features)
    raise ValueError(f"unknown feature {name!r} (known features: {known})")
