"""Every judge answer of a run, parsed or not, as JSONL in the report directory.

A parse failure in a log line is lost with the terminal; here each judgment keeps the judge's
raw text (and the unreadable first answer when a correction was asked), what the parser made of
it or why it could not, and the prompt and completion it was about.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

ANSWERS_FILE = "judge_answers.jsonl"
PARSE_FAILURE = "unreadable answer: no grades in the format the rubric asks for"


def prompt_id(prompt: str) -> str:
    """A short, stable id of a prompt (the same text gives the same id in every run)."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:12]


class AnswerLog:
    """Appends one line per judgment; a new run starts the file afresh."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("", encoding="utf-8")
        self.lines = 0

    def record(
        self,
        judgment: Any,
        *,
        prompt: str,
        completion: str,
        judge_model: str,
        rubric_version: str,
        repeat: int = 0,
    ) -> None:
        """One judgment (a grader.judge.Judgment), fresh or from the cache."""
        parsed = (
            {"scores": judgment.scores, "age_group": judgment.age_group} if judgment.ok else None
        )
        error = judgment.error or (PARSE_FAILURE if judgment.method == "parse_failure" else None)
        entry = {
            "prompt_id": prompt_id(prompt),
            "key": judgment.key,
            "judge_model": judge_model,
            "rubric_version": rubric_version,
            "repeat": repeat,
            "method": judgment.method,
            "parsed": parsed,
            "error": error,
            "attempts": judgment.attempts,
            "cached": judgment.cached,
            "raw": judgment.raw,
            "first_raw": judgment.first_raw,
            "prompt": prompt,
            "completion": completion,
        }
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self.lines += 1
