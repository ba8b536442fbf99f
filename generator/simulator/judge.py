"""The simulator as an LLM judge: GPT-Eval turns, `Answer in the format:` templates, and the
grader's correction turn, graded by text heuristics that move with the quality of the text.

The text graded is found from the rubric's own framing (the grader's rubric files are the
contract): GPT-Eval turn 1 frames the story after "student's completion:" and before
"Please provide"; the instruction rubric puts it after "The student's story:".
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import Counter
from dataclasses import dataclass

from vocab import basic_words, default_vocabulary

_WORD = re.compile(r"[A-Za-z']+")
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
EVAL_TURN1_MARKER = "The symbol *** marks the separator"
FORMAT_MARKER = "Answer in the format:"
PAIRWISE_MARKER = "[The Start of Completion A]"
STOP_WORDS = frozenset(
    """the a an and but or so then they them their there was were is are be been he she it his
    her him to of in on at for with from that this what when one day very all not did do had
    have has said says could would will can just like time once upon very too went go got saw
    see up out off into about after before again some more much many little big""".split()
)
_STOP = STOP_WORDS
AGE_GROUPS = ("A (3 or under)", "B (4-5)", "C (6-7)", "D (8-9)", "E (10-12)", "F (13-16)")


# The GPT-Eval turn 1 frames the story between these two phrases; the rubric's own sentences
# after it mention `***` again, so the completion is never "whatever follows the last ***".
_EVAL_STORY_START = "student's completion:"
_EVAL_STORY_END = "\n\nPlease provide"
_INSTRUCT_STORY = "The student's story:"
_INSTRUCT_END = "\n\nJudge only"


def _split_eval(text: str) -> tuple[str, str]:
    """(beginning, completion) from the turn-1 judge text: split on the first *** of the story."""
    if "***" not in text:
        return "", text
    body = text
    if EVAL_TURN1_MARKER in text and _EVAL_STORY_START in text:
        body = text.split(_EVAL_STORY_START, 1)[1].lstrip("\n")
        if _EVAL_STORY_END in body:
            body = body.rsplit(_EVAL_STORY_END, 1)[0]
        beginning, _, completion = body.partition("***")
        return beginning, completion
    # Another judge prompt: the text after the first *** up to a blank line.
    head, _, tail = text.partition("***")
    beginning = head.split("\n\n")[-1]
    return beginning, tail.split("\n\n", 1)[0]


def _instruct_parts(text: str) -> tuple[str, str] | None:
    """(instructions, story) from the instruction-following rubric, or None."""
    if _INSTRUCT_STORY not in text:
        return None
    head, story = text.split(_INSTRUCT_STORY, 1)
    story = story.rsplit(_INSTRUCT_END, 1)[0].strip("\n")
    instructions = head.split("Instructions:", 1)[-1]
    return instructions, story


def _find_completion(messages: list[dict]) -> tuple[str, str]:
    for message in messages:
        content = str(message.get("content") or "")
        if message.get("role") == "user" and EVAL_TURN1_MARKER in content:
            return _split_eval(content)
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


# Word classes for a crude syntax check: English never puts two of these in a row ("the the",
# "she the", "with was"), and a sentence does not end on a determiner or preposition. Real
# stories break these rules well under 1% of the time; word salad breaks them constantly.
_DET = frozenset("the a an his their my your our its this these those every".split())
_PREP = frozenset("in on at with from into under over of by".split())
_SUBJ = frozenset("he she they we i".split())
_AUX = frozenset("was were is are had has did could would will can".split())
_TOKEN = re.compile(r"[A-Za-z']+|[.!?]|[,;:]")


def syntax_violations(text: str) -> float:
    """Share of adjacent word pairs that break simple English word-order rules."""
    tokens = _TOKEN.findall(text)
    bad = pairs = 0
    sentence_start = True
    lower_seen = {t for t in tokens if t.islower()}
    for a, b in itertools.pairwise(tokens):
        if b in ".!?":
            bad += a.lower() in _DET | _PREP | _SUBJ  # "... went to the."
            sentence_start = True
            continue
        if not b[0].isalpha():
            continue
        if not a[0].isalpha():
            # After . ! ? a sentence starts with a capital; after a comma it rarely does.
            if a in ".!?" and b[0].islower():
                bad += 1
            sentence_start = a in ".!?"
            pairs += 1
            continue
        pairs += 1
        x, y = a.lower(), b.lower()
        if x == y and x not in ("very", "ha", "no", "bye"):
            bad += 1
        elif x in _DET and y in _DET | _PREP | _SUBJ | _AUX:
            bad += 1
        elif x in _SUBJ and y in _DET | _SUBJ:
            bad += 1
        elif x in _PREP and y in _SUBJ | _AUX | _PREP:
            bad += 1
        elif b[0].isupper() and not sentence_start and (y in lower_seen or y in _DET | _SUBJ):
            bad += 1  # a sentence-initial word in the middle of a sentence ("ran The")
        sentence_start = False
    return bad / pairs if pairs else 1.0


_SUFFIXES = ("s", "es", "ed", "d", "ing", "ly", "er", "est", "ies", "ied", "n't")
_PLAIN = re.compile(r"[A-Za-z0-9\s.,!?;:'\"’“”()-]")


@functools.cache
def _known_words() -> frozenset[str]:
    return basic_words() | frozenset(w.lower() for w in default_vocabulary().words)


def _known(word: str) -> bool:
    known = _known_words()
    w = word.lower().removesuffix("'s")
    if w in known:
        return True
    for suffix in _SUFFIXES:
        stem = w.removesuffix(suffix)
        if stem != w and (stem in known or stem + "e" in known or stem + "y" in known):
            return True
        if stem != w and len(stem) > 2 and stem[-1] == stem[-2] and stem[:-1] in known:
            return True  # "running" -> "run"
    return False


def unknown_words(beginning: str, completion: str) -> float:
    """Share of words that are neither everyday English nor a name the text uses (junk tokens)."""
    words = _WORD.findall(completion)
    if not words:
        return 1.0
    names = {w for w in _WORD.findall(beginning) if w[:1].isupper()}
    names |= {w for w, n in Counter(words).items() if w[:1].isupper() and n > 1}
    bad = sum(1 for w in words if not _known(w) and w not in names)
    return bad / len(words)


def _junk_chars(text: str) -> float:
    return sum(1 for ch in text if not _PLAIN.match(ch)) / len(text) if text else 1.0


def score(beginning: str, completion: str) -> Scores:
    """Text heuristics: syntax, length, vocabulary variety, repetition, sentence ends, overlap."""
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
    # 0 for well-formed English, ~0.15-0.3 for shuffled words or junk; 0.2 costs 6 grammar points.
    # Real stories have a few percent unknown words (names, rare words): that much is free.
    unknown = max(0.0, unknown_words(beginning, completion) - 0.08)
    broken = min(1.0, max(syntax_violations(completion), unknown / 2, 2 * _junk_chars(completion)))
    grammar = 9 - 6 * repetition - (0 if ends_well else 2) - 30 * broken
    grammar -= 1 if (mean_len > 30 or mean_len < 3) else 0
    grammar -= 2 if n < 5 else 0
    creativity = 3 + 4 * min(1.0, variety * 1.2) + (n > 60) + (n > 120) - 5 * repetition
    creativity -= 15 * broken  # word salad is varied, not creative
    begin_words = {w.lower() for w in _WORD.findall(beginning) if len(w) > 3}
    begin_words -= _STOP
    overlap = len(begin_words & set(words)) / len(begin_words) if begin_words else 0.5
    consistency = 4 + 5 * min(1.0, overlap * 2.5) - 4 * repetition - 20 * broken
    if beginning and beginning.rstrip()[-1:] not in '.!?"' and stripped[:1].islower():
        consistency += 1  # it finishes the sentence split by ***
    plot = 3 + (n > 40) + (n > 80) + (len(sentences) >= 4) + 2 * ends_well - 5 * repetition
    plot -= 20 * broken
    g, c = _clamp(grammar), _clamp(creativity)
    level = (g + c) / 2 + min(2.0, mean_len / 10) + min(1.0, (sum(map(len, words)) / n - 3))
    age = AGE_GROUPS[max(0, min(5, int((level - 4) // 1.5)))]
    return Scores(g, c, _clamp(consistency), _clamp(plot), age)


def instruction_score(instructions: str, story: str) -> int:
    """Share of the required words (any inflection by prefix) and the given sentence present."""
    words = {w.lower() for w in _WORD.findall(story)}
    required: list[str] = []
    sentence = None
    for line in instructions.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Words":
            required = [w.strip().lower() for w in value.split(",") if w.strip()]
        elif key.strip() == "Random sentence":
            sentence = value.strip()
    checks = [any(w.startswith(r[: max(3, len(r) - 2)]) for w in words) for r in required]
    if sentence:
        checks.append(sentence.lower() in story.lower())
    share = sum(checks) / len(checks) if checks else 0.5
    quality = score("", story).mean() / 10
    return _clamp(1 + 6 * share + 3 * quality)


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


_SLOT = re.compile(r"<score>|<letter[^>]*>|<age[^>]*>")


def _graded_text(messages: list[dict], head: str) -> tuple[str, str, tuple[str, str] | None]:
    """(beginning, completion, instruct parts) of whatever the conversation asks to grade."""
    for message in messages:
        content = str(message.get("content") or "")
        if message.get("role") != "user":
            continue
        if EVAL_TURN1_MARKER in content:
            return (*_split_eval(content), None)
        parts = _instruct_parts(content)
        if parts is not None:
            return "", parts[1], parts
    beginning, completion = _find_completion(messages)
    if completion:
        return beginning, completion, None
    beginning, completion = _split_eval(head) if "***" in head else ("", head)
    return beginning, completion, None


def fill_format(messages: list[dict], last: str) -> str:
    """The template after `Answer in the format:` with each slot filled by a heuristic.

    This also answers a grader's correction turn (which repeats the format): the text graded is
    the one in the conversation's first judge turn, not the correction itself.
    """
    head, template = last.split(FORMAT_MARKER, 1)
    beginning, completion, instruct = _graded_text(messages, head)
    s = score(beginning, completion)
    template = template.strip().split("\n\n")[0]
    out: list[str] = []
    pos = 0
    for match in _SLOT.finditer(template):
        label = template[max(0, match.start() - 40) : match.start()].lower()
        label = re.split(r"[,\n]", label)[-1]
        value: int | str
        if match.group(0) != "<score>":
            value = s.age_group.split()[0]
        elif "instruction" in label and instruct is not None:
            value = instruction_score(*instruct)
        elif "grammar" in label:
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


_PAIR = re.compile(
    r"Beginning of the story:\n(?P<beginning>.*?)\n\n\[The Start of Completion A\]\n(?P<a>.*?)"
    r"\n\[The End of Completion A\]\n\n\[The Start of Completion B\]\n(?P<b>.*?)"
    r"\n\[The End of Completion B\]",
    re.DOTALL,
)


def pairwise_verdict(messages: list[dict]) -> str:
    """A FastChat-style verdict: the completion with the higher heuristic total, or a tie."""
    for message in messages:
        m = (
            _PAIR.search(str(message.get("content") or ""))
            if message.get("role") == "user"
            else None
        )
        if m:
            break
    else:
        return "I cannot find the two completions. [[C]]"
    totals = []
    for key in ("a", "b"):
        s = score(m.group("beginning"), m.group(key))
        totals.append(s.grammar + s.creativity + s.consistency + s.plot)
    # Within 2 of 40 points the heuristics cannot tell the two apart.
    if abs(totals[0] - totals[1]) <= 2:
        return f"Both completions are about as good ({totals[0]} vs {totals[1]}). [[C]]"
    better = "A" if totals[0] > totals[1] else "B"
    return f"Completion {better} is better ({totals[0]} vs {totals[1]} of 40). [[{better}]]"
