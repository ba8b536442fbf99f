"""What the simulator answers: stories, summaries, GPT-Eval judge turns, format templates.

Prompts are recognised from their text (the simulator <-> judge contract):
story prompts name `the verb "..."`; summary prompts carry a `Story to summarize:` line;
GPT-Eval turn 1 says "The symbol *** marks the separator"; turn 2 starts "Now, grade the
student's completion"; other judge prompts end with `Answer in the format:` and a template
with `<score>/10` placeholders. Anything else gets a story continuation.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import Counter
from dataclasses import dataclass

from generator.simulator.grammar import StoryRequest, continue_text, write_story
from vocab import FEATURES

_VERB = re.compile(r'\bverb\s+"([^"]+)"')
_NOUN = re.compile(r'\bnoun\s+"([^"]+)"')
_ADJ = re.compile(r'\badjective\s+"([^"]+)"')
_WORD = re.compile(r"[A-Za-z']+")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
SUMMARY_MARKER = "Story to summarize:"
EVAL_TURN1_MARKER = "The symbol *** marks the separator"
EVAL_TURN2_PREFIX = "Now, grade the student's completion"
FORMAT_MARKER = "Answer in the format:"
_SAD = frozenset("sad cried cry tears broke lost gone never hurt alone angry".split())
_STOP = frozenset(
    """the a an and but or so then they them their there was were is are be been he she it his
    her him to of in on at for with from that this what when one day very all not did do had
    have has said says could would will can just like time once upon very too went go got saw
    see up out off into about after before again some more much many little big""".split()
)
_STARTERS = frozenset(
    """suddenly finally after every today yes no look wow oh now soon later where why how who
    let lets let's please thank thanks okay ok hello hi bye come here we you our your my""".split()
)
AGE_GROUPS = ("A (3 or under)", "B (4-5)", "C (6-7)", "D (8-9)", "E (10-12)", "F (13-16)")


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


# ---- GPT-Eval judge ----------------------------------------------------------------------------


def _split_eval(text: str) -> tuple[str, str]:
    """(beginning, completion) from the turn-1 judge text."""
    if "***" not in text:
        return "", text
    head, tail = text.rsplit("***", 1)
    beginning = head.split("\n\n")[-1] if "\n\n" in head else head
    # The completion ends where the judge's own instructions start.
    completion = tail.split("\n\nPlease provide", 1)[0]
    return beginning, completion


def _find_completion(messages: list[dict]) -> tuple[str, str]:
    for message in messages:
        content = str(message.get("content") or "")
        if message.get("role") == "user" and "***" in content:
            return _split_eval(content)
    return "", ""


@dataclass(frozen=True)
class Scores:
    grammar: int
    creativity: int
    consistency: int
    plot: int
    age_group: str

    def mean(self) -> int:
        return round((self.grammar + self.creativity + self.consistency + self.plot) / 4)


def _clamp(value: float) -> int:
    return max(1, min(10, round(value)))


def score(beginning: str, completion: str) -> Scores:
    """Text heuristics: length, vocabulary variety, repetition, sentence ends, overlap."""
    words = [w.lower() for w in _WORD.findall(completion)]
    n = len(words)
    if n == 0:
        return Scores(1, 1, 1, 1, AGE_GROUPS[0])
    trigrams = [tuple(words[i : i + 3]) for i in range(n - 2)]
    repetition = 1 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0
    variety = len(set(words)) / n
    stripped = completion.strip()
    ends_well = stripped[-1:] in (".", "!", "?", '"')
    sentences = [s for s in _SENTENCE_SPLIT.split(stripped) if s]
    mean_len = n / max(1, len(sentences))
    doubled = sum(1 for a, b in itertools.pairwise(words) if a == b) / n
    grammar = 9 - 6 * repetition - (0 if ends_well else 2) - 20 * doubled
    grammar -= 1 if (mean_len > 30 or mean_len < 3) else 0
    grammar -= 2 if n < 5 else 0
    creativity = 3 + 4 * min(1.0, variety * 1.2) + (n > 60) + (n > 120) - 5 * repetition
    begin_words = {w.lower() for w in _WORD.findall(beginning) if len(w) > 3}
    begin_words -= _STOP
    overlap = len(begin_words & set(words)) / len(begin_words) if begin_words else 0.5
    consistency = 4 + 5 * min(1.0, overlap * 2.5) - 4 * repetition
    if beginning and beginning.rstrip()[-1:] not in '.!?"' and stripped[:1].islower():
        consistency += 1  # it finishes the sentence split by ***
    plot = 3 + (n > 40) + (n > 80) + (len(sentences) >= 4) + 2 * ends_well - 5 * repetition
    g, c = _clamp(grammar), _clamp(creativity)
    level = (g + c) / 2 + min(2.0, mean_len / 10) + min(1.0, (sum(map(len, words)) / n - 3))
    age = AGE_GROUPS[max(0, min(5, int((level - 4) // 1.5)))]
    return Scores(g, c, _clamp(consistency), _clamp(plot), age)


def grade_line(beginning: str, completion: str) -> str:
    """The GPT-Eval turn-2 line, e.g. `Grammar: 8/10, Creativity: 7/10, ... Age group: C (6-7)`."""
    s = score(beginning, completion)
    return (
        f"Grammar: {s.grammar}/10, Creativity: {s.creativity}/10, "
        f"Consistency: {s.consistency}/10, Plot: {s.plot}/10, Age group: {s.age_group}"
    )


def assessment(beginning: str, completion: str) -> str:
    """A short free-text judge assessment (GPT-Eval turn 1)."""
    s = score(beginning, completion)
    if s.grammar >= 8:
        grammar = "The completion is grammatically correct"
    elif s.grammar >= 5:
        grammar = "The completion is mostly grammatical, with a few errors"
    else:
        grammar = "The completion has many grammatical problems"
    consistency = (
        "stays consistent with the beginning of the story"
        if s.consistency >= 7
        else "only loosely follows the beginning of the story"
    )
    plot = (
        "The plot makes sense and reaches an ending."
        if s.plot >= 7
        else "The plot is thin and the story stops without a clear ending."
    )
    return f"{grammar} and {consistency}. {plot}"


_SCORE_SLOT = re.compile(r"<score>")


def fill_format(messages: list[dict], last: str) -> str:
    """The template after `Answer in the format:` with each `<score>` replaced by a heuristic."""
    head, template = last.split(FORMAT_MARKER, 1)
    beginning, completion = _find_completion(messages)
    if not completion:
        beginning, completion = _split_eval(head) if "***" in head else ("", head)
    s = score(beginning, completion)
    template = template.strip().split("\n\n")[0]
    out: list[str] = []
    pos = 0
    for match in _SCORE_SLOT.finditer(template):
        label = template[max(0, match.start() - 40) : match.start()].lower()
        label = re.split(r"[,\n]", label)[-1]
        if "grammar" in label:
            value = s.grammar
        elif "creativ" in label:
            value = s.creativity
        elif "consisten" in label:
            value = s.consistency
        elif "plot" in label:
            value = s.plot
        else:
            value = s.mean()
        out.append(template[pos : match.start()] + str(value))
        pos = match.end()
    out.append(template[pos:])
    return "".join(out)
