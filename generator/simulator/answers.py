"""What the simulator answers: stories, summaries, GPT-Eval judge turns, format templates.

Prompts are recognised from their text (the simulator <-> judge contract):
story prompts name `the verb "..."`; summary prompts carry a `Story to summarize:` line;
GPT-Eval turn 1 says "The symbol *** marks the separator"; turn 2 starts "Now, grade the
student's completion"; other judge prompts end with `Answer in the format:` and a template
with `<score>/10` placeholders. Anything else gets a story continuation.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass

from generator.simulator.grammar import StoryRequest, continue_text, write_story
from generator.simulator.judge import (
    _WORD,
    EVAL_TURN1_MARKER,
    FORMAT_MARKER,
    PAIRWISE_MARKER,
    STOP_WORDS,
    _find_completion,
    _split_eval,
    assessment,
    fill_format,
    grade_line,
    pairwise_verdict,
)
from generator.simulator.judge import score as score  # re-exported: the judge's heuristics
from vocab import FEATURES

_VERB = re.compile(r'\bverb\s+"([^"]+)"')
_NOUN = re.compile(r'\bnoun\s+"([^"]+)"')
_ADJ = re.compile(r'\badjective\s+"([^"]+)"')
SUMMARY_MARKER = "Story to summarize:"
EVAL_TURN2_PREFIX = "Now, grade the student's completion"
_SAD = frozenset("sad cried cry tears broke lost gone never hurt alone angry".split())
_STOP = STOP_WORDS
_STARTERS = frozenset(
    """suddenly finally after every today yes no look wow oh now soon later where why how who
    let lets let's please thank thanks okay ok hello hi bye come here we you our your my""".split()
)


@dataclass(frozen=True)
class Answer:
    text: str
    kind: str  # story | summary | judge | format | continuation


def parse_story_request(prompt: str) -> StoryRequest | None:
    """The recipe inside a TinyStories generation prompt, or None if it is not one."""
    verb, noun, adj = _VERB.search(prompt), _NOUN.search(prompt), _ADJ.search(prompt)
    if not (verb and noun and adj):
        return None
    features = tuple(f.name for f in FEATURES if f.phrase in prompt)
    return StoryRequest(verb.group(1), noun.group(1), adj.group(1), features)


def _last_user(messages: list[dict]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    return str(messages[-1].get("content") or "") if messages else ""


def answer(messages: list[dict], rng: random.Random) -> Answer:
    """Route a conversation to the right kind of answer."""
    last = _last_user(messages)
    if last.lstrip().startswith(EVAL_TURN2_PREFIX):
        beginning, completion = _find_completion(messages)
        return Answer(grade_line(beginning, completion), "judge")
    if any(PAIRWISE_MARKER in str(m.get("content") or "") for m in messages):
        return Answer(pairwise_verdict(messages), "judge")
    if FORMAT_MARKER in last:
        return Answer(fill_format(messages, last), "format")
    if EVAL_TURN1_MARKER in last:
        beginning, completion = _split_eval(last)
        return Answer(assessment(beginning, completion), "judge")
    if SUMMARY_MARKER in last:
        story = last.split(SUMMARY_MARKER, 1)[1].strip()
        return Answer(summarize(story, rng), "summary")
    request = parse_story_request(last)
    if request is not None:
        return Answer(write_story(request, rng), "story")
    return Answer(continue_text(last, rng), "continuation")


# ---- summaries -------------------------------------------------------------------------------


def _names(text: str) -> list[str]:
    """Capitalised words that never occur in lower case (names), most frequent first."""
    lower = {w for w in _WORD.findall(text) if w.islower()}
    counts: Counter[str] = Counter()
    for word in _WORD.findall(text):
        word = word.removesuffix("'s")
        if (
            word[:1].isupper()
            and word.lower() not in _STOP
            and word.lower() not in _STARTERS
            and word.lower() not in lower
            and word != "I"
        ):
            counts[word] += 1
    return [w for w, _ in counts.most_common()]


def _topics(text: str, exclude: set[str]) -> list[str]:
    words = [w.lower() for w in _WORD.findall(text)]
    counts = Counter(w for w in words if len(w) > 3 and w not in _STOP and w not in exclude)
    return [w for w, _ in counts.most_common(3)]


def summarize(story: str, rng: random.Random) -> str:
    """One or two sentences: who, what, and how it ended."""
    names = _names(story)
    who = " and ".join(names[:2]) if names else "A little child"
    topics = _topics(story, {n.lower() for n in names}) or ["a new friend"]
    thing = topics[0]
    last_part = story.strip().split("\n\n")[-1].lower()
    sad = any(w in _SAD for w in _WORD.findall(last_part))
    first = rng.choice(
        (
            f"{who} find a {thing} and have an adventure with it.",
            f"{who} play with a {thing} and learn something new.",
            f"{who} spend a day with a {thing}.",
        )
    )
    if len(names) == 1:
        first = first.replace(" find ", " finds ").replace(" play ", " plays ")
        first = first.replace(" have ", " has ").replace(" learn ", " learns ")
        first = first.replace(" spend ", " spends ")
    if sad:
        second = "In the end, things go wrong and everyone is sad."
    else:
        second = "In the end, everyone is happy."
    return f"{first} {second}"
