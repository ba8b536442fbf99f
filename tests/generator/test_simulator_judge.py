"""The simulator as a judge, driven by the grader's real rubric files: it reads the completion
that is actually between the separators, and its grades move with the quality of the text."""

from __future__ import annotations

import json
import random
import re
import statistics
from pathlib import Path

from generator.simulator.answers import answer
from generator.simulator.judge import score, syntax_violations
from grader.parsing import parse_gpt_eval, parse_template
from grader.resources import load_rubric

RUBRIC = load_rubric()
INSTRUCT = load_rubric("instruct_rubric.yaml")
REAL = json.loads((Path(__file__).parent / "data" / "real_stories_heldout.json").read_text())[
    "stories"
]


def _fill(template: str, **fields: str) -> str:
    for name, value in fields.items():
        template = template.replace("{" + name + "}", value)
    return template


def _grade(beginning: str, completion: str) -> dict:
    """The grader's two-turn conversation against the simulator, parsed by the grader."""
    turn1, turn2 = RUBRIC.turns
    messages = [
        {"role": "user", "content": _fill(turn1, beginning=beginning, completion=completion)}
    ]
    first = answer(messages, random.Random(0))
    messages += [{"role": "assistant", "content": first.text}, {"role": "user", "content": turn2}]
    parsed = parse_gpt_eval(answer(messages, random.Random(0)).text)
    assert parsed is not None and parsed.method == "strict"
    return parsed.scores | {"age": parsed.age_group}


def _cut(story: str) -> tuple[str, str]:
    words = story.split()
    cut = len(words) // 3
    return " ".join(words[:cut]), " " + " ".join(words[cut:])


def test_reads_the_completion_not_the_rubrics_closing_sentence() -> None:
    assert RUBRIC.turns[0].count("***") >= 3  # the trap: more *** after the story
    beginning, completion = _cut(REAL[0])
    graded = _grade(beginning, completion)
    expected = score(beginning, completion)
    assert graded["grammar"] == expected.grammar and graded["plot"] == expected.plot
    assert graded["grammar"] >= 7 and graded["plot"] >= 6  # not 1/10 for "."


def test_real_stories_score_clearly_higher_than_their_words_shuffled() -> None:
    rng = random.Random(0)
    real, shuffled = [], []
    for story in REAL[:40]:
        beginning, completion = _cut(story)
        words = completion.split()
        rng.shuffle(words)
        real.append(_grade(beginning, completion))
        shuffled.append(_grade(beginning, " " + " ".join(words)))
    for category in ("grammar", "creativity", "consistency", "plot"):
        good = statistics.mean(r[category] for r in real)
        bad = statistics.mean(s[category] for s in shuffled)
        assert good >= bad + 2, (category, good, bad)
    # Word salad reads like a younger writer than real stories.
    assert statistics.mean("ABCDEF".index(r["age"]) for r in real) > statistics.mean(
        "ABCDEF".index(s["age"]) for s in shuffled
    )


def test_syntax_check_separates_english_from_word_salad() -> None:
    rng = random.Random(1)
    real = [syntax_violations(s) for s in REAL]
    salad = []
    for s in REAL:
        words = s.split()
        rng.shuffle(words)
        salad.append(syntax_violations(" ".join(words)))
    assert statistics.mean(real) < 0.02 and min(salad) > max(statistics.mean(real), 0.04)


def test_correction_turn_is_answered_from_the_first_turns_story() -> None:
    beginning, completion = _cut(REAL[1])
    turn1, _ = RUBRIC.turns
    messages = [
        {"role": "user", "content": _fill(turn1, beginning=beginning, completion=completion)},
        {"role": "assistant", "content": "A lovely story."},
        {"role": "user", "content": RUBRIC.turns[1]},
        {"role": "assistant", "content": "It is lovely, I liked it a lot."},
        {"role": "user", "content": RUBRIC.correction},
    ]
    line = answer(messages, random.Random(0)).text
    parsed = parse_gpt_eval(line)
    assert parsed is not None and parsed.method == "strict", line
    s = score(beginning, completion)
    assert parsed.scores["grammar"] == s.grammar and parsed.age_group == s.age_group[0]


def test_instruction_following_reads_the_story_and_its_required_words() -> None:
    template = "Instruction following: <score>/10"
    story = REAL[2]
    present = [w for w in re.findall(r"[a-z]{5,}", story)][:3]

    def judged(words: list[str]) -> float:
        text = _fill(INSTRUCT.turns[0], instructions=f"Words: {', '.join(words)}", story=story)
        reply = answer([{"role": "user", "content": text}], random.Random(0)).text
        parsed = parse_template(reply, template)
        assert parsed is not None and parsed.method == "strict", reply
        return parsed.scores["instruction_following"]

    assert judged(present) >= judged(["zebra", "volcano", "trumpet"]) + 4


def test_instruction_correction_turn_grades_the_same_story() -> None:
    story = REAL[3]
    text = _fill(INSTRUCT.turns[0], instructions="Words: mirror, nose, dress", story=story)
    first = answer([{"role": "user", "content": text}], random.Random(0)).text
    messages = [
        {"role": "user", "content": text},
        {"role": "assistant", "content": "Pretty good overall."},
        {"role": "user", "content": INSTRUCT.correction},
    ]
    again = answer(messages, random.Random(0)).text
    assert again == first and re.fullmatch(r"Instruction following: \d+/10", again)
