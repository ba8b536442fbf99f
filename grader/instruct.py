"""Instruction following for TinyStories-Instruct models: header lines in, story out."""

from __future__ import annotations

import re
from dataclasses import dataclass

from generator.checks import StoryChecker

HEADER_KEYS = ("Summary", "Words", "Features", "Random sentence")


@dataclass(frozen=True)
class Instruction:
    header: str  # the header lines, exactly as in the training text
    words: tuple[str, ...]
    features: tuple[str, ...]
    summary: str | None
    sentence: str | None

    @property
    def prompt(self) -> str:
        return self.header.rstrip("\n") + "\nStory: \n\n"


def parse_instruction(text: str) -> Instruction:
    """Header lines of an `instruction` value or a full instruct record (stops at `Story:`)."""
    header_lines = []
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("Story:"):
            break
        key, sep, value = line.partition(":")
        if sep and key.strip() in HEADER_KEYS:
            fields[key.strip()] = value.strip()
            header_lines.append(line)
    words = tuple(w.strip() for w in fields.get("Words", "").split(",") if w.strip())
    features = tuple(f.strip() for f in fields.get("Features", "").split(",") if f.strip())
    return Instruction(
        header="\n".join(header_lines),
        words=words,
        features=features,
        summary=fields.get("Summary"),
        sentence=fields.get("Random sentence"),
    )


_TOKEN = re.compile(r"[A-Za-z]+(?:['’-][A-Za-z]+)*")


def required_words_present(story: str, words: tuple[str, ...] | list[str]) -> list[bool]:
    """Per required word: is some inflection of it in the story (quit counts in quits)?

    generator.checks decides this for generated stories; the grader asks the same matcher so a
    word counts as present here exactly when it would there.
    """
    tokens = _TOKEN.findall(story)
    missing = set(StoryChecker.missing_words(tokens, story, list(words)))
    return [w not in missing for w in words]


def instruct_fields(instruction: Instruction, story: str) -> dict[str, str]:
    return {"instructions": instruction.header, "story": story}


def is_instruct_model(training: dict) -> bool:
    """Whether training.json says the model was trained on instruct records."""
    for key, value in training.items():
        if "instruct" in key.lower() and bool(value):
            return True
        if isinstance(value, str) and value in ("instruct", "instruct_text", "TinyStoriesInstruct"):
            return True
    return False
