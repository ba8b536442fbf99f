"""A small story grammar: varied multi-paragraph children's stories that honour a recipe.

Verbs are only used in their base form ("wanted to hang", "Let's hang"), so any verb of the
vocabulary fits without an inflection table; nouns mostly take "the" so mass nouns read well.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from vocab import default_vocabulary

GIRLS = ("Lily", "Mia", "Sue", "Anna", "Lucy", "Zoe", "Ella", "Amy", "Sara", "Kim")
BOYS = ("Tom", "Ben", "Max", "Tim", "Sam", "Jack", "Leo", "Bob", "Joe", "Dan")
KINDS_GIRL = ("girl", "little girl")
KINDS_BOY = ("boy", "little boy")
ANIMALS = ("dog", "cat", "bird", "bunny", "bear", "duck", "frog", "fox", "mouse", "fish")
PLACES = ("park", "garden", "forest", "beach", "farm", "yard", "town", "woods", "lake", "hill")
TOYS = ("ball", "kite", "doll", "car", "box", "hat", "book", "truck", "drum", "boat")
WEATHER = (
    "The sun was warm and the sky was blue.",
    "The wind was soft and the birds sang in the trees.",
    "It was a bright day and the flowers were pretty.",
    "The grass was green and the air smelled sweet.",
    "Big white clouds moved slowly in the sky.",
)
MORALS = (
    "to always share with your friends",
    "that being kind is better than being angry",
    "to listen to your mom and dad",
    "to be careful and think before you act",
    "that friends help each other",
    "to say sorry when you make a mistake",
    "that it is good to be brave",
)


@dataclass(frozen=True)
class StoryRequest:
    """What a story prompt asks for."""

    verb: str
    noun: str
    adjective: str
    features: tuple[str, ...] = ()


def article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


@lru_cache(maxsize=1)
def _filler_nouns() -> tuple[str, ...]:
    """Short nouns of the vocabulary that are only nouns, for side objects (variety)."""
    vocabulary = default_vocabulary()
    return tuple(
        n
        for n in vocabulary.nouns
        if n.isalpha() and n.islower() and 3 <= len(n) <= 6 and vocabulary.roles(n) == ("noun",)
    )


class _Cast:
    def __init__(self, rng: random.Random) -> None:
        self.girl = rng.random() < 0.5
        self.hero = rng.choice(GIRLS if self.girl else BOYS)
        friend_girl = rng.random() < 0.5
        pool = [n for n in (GIRLS if friend_girl else BOYS) if n != self.hero]
        self.friend = rng.choice(pool)
        self.kind = rng.choice(KINDS_GIRL if self.girl else KINDS_BOY)
        self.he = "she" if self.girl else "he"
        self.his = "her" if self.girl else "his"
        self.him = "her" if self.girl else "him"
        self.fhe = "she" if friend_girl else "he"
        self.place = rng.choice(PLACES)
        self.toy = rng.choice(TOYS)
        self.animal = rng.choice(ANIMALS)
        fillers = _filler_nouns()
        self.thing = rng.choice(fillers) if fillers else "stone"


def _cap(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]


def write_story(request: StoryRequest, rng: random.Random) -> str:
    """A 3-5 paragraph story using the verb, noun and adjective and the requested features."""
    c = _Cast(rng)
    verb, noun, adj = request.verb, request.noun, request.adjective
    features = set(request.features)
    a_adj = article(adj)
    paragraphs: list[list[str]] = []

    intro = [
        rng.choice(
            (
                f"Once upon a time, there was a {c.kind} named {c.hero}.",
                f"One day, a {c.kind} named {c.hero} went to the {c.place}.",
                f"{c.hero} was a {c.kind} who lived in a small house near the {c.place}.",
                f"There once was a happy {c.kind} called {c.hero}.",
            )
        ),
        rng.choice(
            (
                f"{_cap(c.he)} loved to {verb} every day.",
                f"{_cap(c.he)} liked to {verb} with {c.his} {c.toy}.",
                f"More than anything, {c.he} wanted to {verb}.",
                f"Every morning, {c.he} tried to {verb} in the {c.place}.",
            )
        ),
        rng.choice(WEATHER),
    ]
    if "Foreshadowing" in features:
        intro.append(
            rng.choice(
                (
                    f"{c.hero}'s mom gave {c.him} a {c.toy} and said, \"Keep it close. "
                    'You may need it one day."',
                    f"{_cap(c.he)} did not know that the {noun} would be very important later.",
                    f"Far away, dark clouds were coming, but {c.hero} did not see them yet.",
                )
            )
        )
    paragraphs.append(intro)

    meet = [
        rng.choice(
            (
                f"One day, {c.hero} saw {a_adj} {adj} {noun} near a big tree.",
                f"In the {c.place}, {c.hero} found {a_adj} {adj} {noun} under a {c.thing}.",
                f"{c.hero} and {c.his} friend {c.friend} found {a_adj} {adj} {noun}.",
                f"Then {c.hero} saw the {noun}. It was very {adj}.",
            )
        )
    ]
    if "Dialogue" in features:
        meet += [
            f'"Look, {c.friend}!" said {c.hero}. "This {noun} is so {adj}!"',
            rng.choice(
                (
                    f'"Can we {verb} with it?" asked {c.friend}.',
                    f'"Let\'s {verb} together!" said {c.friend} with a big smile.',
                    f'"Wow! Do you want to {verb}?" asked {c.friend}.',
                )
            ),
            rng.choice(
                (
                    f'"Yes, let\'s {verb}!" said {c.hero}.',
                    f'"Okay, but we have to be careful," said {c.hero}.',
                )
            ),
        ]
    else:
        meet += [
            rng.choice(
                (
                    f"{c.hero} wanted to {verb} with the {noun}.",
                    f"{_cap(c.he)} showed the {noun} to {c.friend}, and they both smiled.",
                    f"{c.hero} and {c.friend} wanted to {verb} next to the {noun}.",
                )
            ),
            rng.choice(
                (
                    "They laughed and played all morning.",
                    f"They ran around the {c.place} and had a lot of fun.",
                    f"A little {c.animal} came to watch them play.",
                )
            ),
        ]
    paragraphs.append(meet)

    play = [
        f"{c.hero} and {c.friend} took the {noun} to the {c.place}.",
        f"They tried to {verb} with it, and it was fun.",
        f"A little {c.animal} came to see what they were doing.",
        f"The {c.animal} wanted to play too, so they let it join them.",
        f"{c.friend} found a {c.thing} and put it next to the {noun}.",
        f"They made a game where they had to {verb} as fast as they could.",
        f"{c.hero} laughed so much that {c.his} tummy hurt.",
        "They ran, jumped and sang songs together.",
        'Mom called from the house, "Have fun, and be careful!"'
        if "Dialogue" in features
        else "Mom watched them from the window and smiled.",
        f"The {adj} {noun} made everyone feel happy.",
    ]
    keep = sorted(rng.sample(range(len(play)), k=rng.randint(4, 6)))  # keep the play's order
    paragraphs.append([play[i] for i in keep])

    if "Conflict" in features:
        fight = [
            f"But {c.friend} wanted the {noun} too.",
            rng.choice(
                (
                    f"{c.friend} pulled the {noun} and {c.hero} pulled it back.",
                    f"{c.friend} took the {noun} and did not want to give it back.",
                )
            ),
            "They were both angry and they did not play together.",
        ]
        if "Dialogue" in features:
            fight.append(f'"It is mine!" shouted {c.friend}. "No, I found it!" said {c.hero}.')
        paragraphs.append(fight)

    if "Twist" in features:
        paragraphs.append(
            [
                rng.choice(
                    (
                        "Then, something unexpected happened.",
                        "But then, there was a big surprise.",
                        "Suddenly, something strange happened.",
                    )
                ),
                rng.choice(
                    (
                        f"The {noun} began to move all by itself!",
                        f"A {c.animal} jumped out from behind the {c.thing} and took the {noun}!",
                        f"The {noun} was not a {noun} at all. It was a magic {c.toy}!",
                    )
                ),
                f"{c.hero} and {c.friend} could not believe their eyes.",
            ]
        )

    if "BadEnding" in features:
        ending = [
            rng.choice(
                (
                    f"But then the {noun} broke into many small pieces.",
                    f"But the wind came and took the {noun} far away.",
                    f"But the {noun} fell into the lake and was gone.",
                )
            ),
            f"{c.hero} cried and cried. {_cap(c.he)} could never {verb} with it again.",
            rng.choice(
                (
                    f"{_cap(c.he)} went home alone and was sad for a long time.",
                    "The day that started so well ended in tears.",
                )
            ),
        ]
    else:
        ending = [
            rng.choice(
                (
                    f"In the end, {c.hero} and {c.friend} shared the {noun}.",
                    f"At last, {c.hero} gave the {noun} a big hug.",
                    f"{c.hero} and {c.friend} played with the {adj} {noun} all day.",
                )
            ),
            rng.choice(
                (
                    "They were very happy and went home with big smiles.",
                    "It was the best day ever.",
                    "They laughed until the sun went down.",
                )
            ),
        ]
        if "Conflict" in features:
            ending.insert(0, f"{c.hero} said sorry, and {c.friend} said sorry too.")
    if "Foreshadowing" in features:
        ending.append(f"Now {c.hero} knew why the {noun} was so special.")
    if "MoralValue" in features:
        ending.append(f"The moral of the story is {rng.choice(MORALS)}.")
    paragraphs.append(ending)

    return "\n\n".join(" ".join(p) for p in paragraphs)


def continue_text(text: str, rng: random.Random, *, sentences: int = 5) -> str:
    """A generic story continuation of arbitrary text (plain completions)."""
    c = _Cast(rng)
    stripped = text.rstrip()
    out: list[str] = []
    if stripped and stripped[-1] not in '.!?"':
        out.append(rng.choice(("and it was a very happy day.", "with a big smile.", "too.")))
    pool = [
        f"{c.hero} looked around the {c.place}.",
        f"A little {c.animal} came and sat next to {c.him}.",
        f"{_cap(c.he)} found a {c.toy} and wanted to play.",
        f"{c.friend} came to help, and they worked together.",
        rng.choice(WEATHER),
        "They laughed and played all day.",
        f'{_cap(c.he)} said, "Thank you, {c.friend}!"',
        "In the end, everyone was happy.",
    ]
    out.extend(rng.sample(pool[:-1], k=min(sentences - 1, len(pool) - 1)))
    out.append(pool[-1])
    return " ".join(out)
