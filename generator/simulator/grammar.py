"""A small story grammar: varied multi-paragraph children's stories that honour a recipe.

Verbs are only used in their base form ("wanted to hang", "Let's hang"), so any verb of the
vocabulary fits without an inflection table; nouns mostly take "the" so mass nouns read well.

Stock sentences carry slots filled from the vocabulary's adjectives and nouns, so that two
stories share about as many word 5-grams as two real TinyStories stories do (mostly the
opening formula): without them every story repeated the same sentences and near-duplicate
detection saw far more candidate pairs than real data produces.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from generator.simulator.wordlists import (
    ANIMALS,
    BOYS,
    GIRLS,
    KINDS_BOY,
    KINDS_GIRL,
    MORALS,
    PLACES,
    RESERVED_ADJECTIVES,
    TOYS,
    WEATHER,
)
from vocab import default_vocabulary


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
def _slot_adjectives() -> tuple[str, ...]:
    """Plain adjectives of the vocabulary for descriptive slots."""
    vocabulary = default_vocabulary()
    return tuple(
        a
        for a in vocabulary.adjectives
        if a.isalpha()
        and a.islower()
        and vocabulary.roles(a) == ("adjective",)
        and a not in RESERVED_ADJECTIVES
    )


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
        self._rng = rng
        self._adjectives = _slot_adjectives() or ("little",)
        self._fillers = fillers or ("stone",)

    def adj(self) -> str:
        """A fresh descriptive adjective."""
        return self._rng.choice(self._adjectives)

    def a_adj(self) -> str:
        """A fresh adjective with its article: "a big", "an old"."""
        word = self.adj()
        return f"{article(word)} {word}"

    def noun(self) -> str:
        """A fresh side object."""
        return self._rng.choice(self._fillers)

    def weather(self) -> str:
        a, b = self.adj(), self.adj()
        line = self._rng.choice(WEATHER)
        return line.format(a=a, b=b, A=_cap(a), n=self.adj())


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
                f"One day, a {c.kind} named {c.hero} went to the {c.adj()} {c.place}.",
                f"{c.hero} was a {c.adj()} {c.kind} who lived in a small house near the {c.place}.",
                f"There once was {c.a_adj()} {c.kind} called {c.hero}.",
            )
        ),
        rng.choice(
            (
                f"{_cap(c.he)} loved to {verb} every day.",
                f"{_cap(c.he)} liked to {verb} with {c.his} {c.adj()} {c.toy}.",
                f"More than anything, {c.he} wanted to {verb}.",
                f"Every morning, {c.he} tried to {verb} in the {c.adj()} {c.place}.",
                f"{_cap(c.he)} and {c.his} {c.adj()} {c.animal} liked to {verb} together.",
            )
        ),
        c.weather(),
    ]
    if "Foreshadowing" in features:
        intro.append(
            rng.choice(
                (
                    f"{c.hero}'s mom gave {c.him} {c.a_adj()} {c.toy} and said, \"Keep it "
                    'close. You may need it one day."',
                    f"{_cap(c.he)} did not know that the {noun} would be very important later.",
                    f"Far away, {c.adj()} clouds were coming, but {c.hero} did not see them yet.",
                )
            )
        )
    paragraphs.append(intro)

    meet = [
        rng.choice(
            (
                f"One day, {c.hero} saw {a_adj} {adj} {noun} near {c.a_adj()} tree.",
                f"In the {c.place}, {c.hero} found {a_adj} {adj} {noun} under {c.a_adj()} "
                f"{c.thing}.",
                f"{c.hero} and {c.his} {c.adj()} friend {c.friend} found {a_adj} {adj} {noun}.",
                f"Then {c.hero} saw the {noun}. It was very {adj} and a little {c.adj()}.",
            )
        )
    ]
    if "Dialogue" in features:
        meet += [
            f'"Look, {c.friend}!" said {c.hero}. "This {noun} is so {adj}!"',
            rng.choice(
                (
                    f'"Can we {verb} with it?" asked {c.friend}.',
                    f'"Let\'s {verb} together!" said {c.friend} with {c.a_adj()} smile.',
                    f'"Wow! Do you want to {verb}?" asked {c.friend}.',
                    f'"It looks {c.adj()}," said {c.friend}. "Can we {verb}?"',
                )
            ),
            rng.choice(
                (
                    f'"Yes, let\'s {verb}!" said {c.hero}.',
                    f'"Okay, but we have to be careful," said {c.hero}.',
                    f'"Yes! It will be {c.adj()}," said {c.hero}.',
                )
            ),
        ]
    else:
        meet += [
            rng.choice(
                (
                    f"{c.hero} wanted to {verb} with the {noun}.",
                    f"{_cap(c.he)} showed the {noun} to {c.friend}, and they both smiled.",
                    f"{c.hero} and {c.friend} wanted to {verb} next to the {c.adj()} {noun}.",
                )
            ),
            rng.choice(
                (
                    f"They laughed and played all {rng.choice(('morning', 'day', 'afternoon'))}.",
                    f"They ran around the {c.adj()} {c.place} and had a lot of fun.",
                    f"{_cap(c.a_adj())} {c.animal} came to watch them play.",
                )
            ),
        ]
    paragraphs.append(meet)

    play = [
        f"{c.hero} and {c.friend} took the {noun} to the {c.adj()} {c.place}.",
        rng.choice(
            (
                f"They tried to {verb} with it, and it was {c.adj()}.",
                f"It was {c.adj()} to {verb} with the {c.adj()} {noun}.",
                f"They took turns to {verb}, and {c.friend} went first.",
            )
        ),
        rng.choice(
            (
                f"{_cap(c.a_adj())} {c.animal} came to see what they were doing.",
                f"{_cap(c.a_adj())} {c.animal} watched them from behind {c.a_adj()} {c.noun()}.",
                f"Soon {c.a_adj()} {c.animal} sat down next to {c.hero}.",
            )
        ),
        rng.choice(
            (
                f"The {c.animal} wanted to play too, so the {c.adj()} {c.animal} joined them.",
                f"The {c.adj()} {c.animal} wanted a turn, and {c.hero} said yes.",
            )
        ),
        rng.choice(
            (
                f"{c.friend} found {c.a_adj()} {c.noun()} and put it next to the {noun}.",
                f"{c.friend} brought {c.a_adj()} {c.noun()} from the {c.adj()} house.",
                f"Next to the {noun}, {c.friend} saw {c.a_adj()} {c.noun()}.",
            )
        ),
        rng.choice(
            (
                f"They made {c.a_adj()} game where they had to {verb} as fast as they could.",
                f"In their {c.adj()} game, the one who could {verb} best got {c.a_adj()} "
                f"{c.noun()}.",
                f"They played {c.a_adj()} game with {c.a_adj()} {c.noun()}.",
            )
        ),
        f"{c.hero} laughed so much that {c.his} {c.adj()} tummy hurt.",
        rng.choice(
            (
                f"They ran, jumped and sang {c.adj()} songs about {c.a_adj()} {c.noun()}.",
                f"They jumped over {c.a_adj()} {c.noun()} and ran to the {c.adj()} {c.noun()}.",
                f"They sang a {c.adj()} song about the {c.adj()} {c.noun()}.",
            )
        ),
        f'Mom called from the house, "Have fun, and be careful with the {c.noun()}!"'
        if "Dialogue" in features
        else f"Mom watched them from the {c.adj()} window and smiled.",
        f"The {adj} {noun} made everyone feel {c.adj()}.",
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
            f"They were both angry and they did not play with the {c.adj()} {c.noun()}.",
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
                        f"{_cap(c.a_adj())} {c.animal} jumped out from behind the {c.thing} and "
                        f"took the {noun}!",
                        f"The {noun} was not a {noun} at all. It was a magic {c.adj()} {c.toy}!",
                    )
                ),
                f"{c.hero} and {c.friend} could not believe their {c.adj()} eyes.",
            ]
        )

    if "BadEnding" in features:
        ending = [
            rng.choice(
                (
                    f"But then the {noun} broke into many small pieces.",
                    f"But the {c.adj()} wind came and took the {noun} far away.",
                    f"But the {noun} fell into the {c.adj()} lake and was gone.",
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
                    f"At last, {c.hero} gave the {noun} {c.a_adj()} hug.",
                    f"{c.hero} and {c.friend} played with the {adj} {noun} all day.",
                )
            ),
            rng.choice(
                (
                    f"They were very {c.adj()} and went home with {c.adj()} smiles.",
                    f"It was the most {c.adj()} day ever.",
                    f"They laughed until the {c.adj()} sun went down.",
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
        c.weather(),
        "They laughed and played all day.",
        f'{_cap(c.he)} said, "Thank you, {c.friend}!"',
        "In the end, everyone was happy.",
    ]
    out.extend(rng.sample(pool[:-1], k=min(sentences - 1, len(pool) - 1)))
    out.append(pool[-1])
    return " ".join(out)
