"""The grading run's settings and progress protocol, shared by run, sections and cli."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from grader.generation import GenerationSettings


class Progress(Protocol):
    def task(self, description: str, total: int) -> Callable[[int], None]: ...
    def note(self, message: str) -> None: ...


class GradeError(RuntimeError):
    """A grading run cannot start or continue; the message is for the user."""


@dataclass
class JudgeSettings:
    model: str
    base_url: str
    api_key: str = field(repr=False)
    simulator: bool = False
    requested_model: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    concurrency: int = 32
    max_attempts: int = 4
    timeout_s: float = 60.0
    # Temperature 0 makes a judgment repeatable; judge noise is then the judge's own variance.
    temperature: float = 0.0
    # The turn-1 assessment is a paragraph; 400 tokens leaves room and caps cost per call.
    max_tokens: int = 400

    def public(self) -> dict:
        # Never the key.
        return {
            "model": self.model,
            "base_url": self.base_url,
            "simulator": self.simulator,
            "requested_model": self.requested_model,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        }


@dataclass
class GradeConfig:
    models: list[Path]
    out: Path
    judge: JudgeSettings | None = None  # set before grade(); the simulator's URL comes late
    data: Path | None = None
    k: int = 10
    n_prompts: int | None = None  # first N evaluation prompts (None: all 44)
    prompts_file: Path | None = None
    suites: list[str] | None = None  # None: every suite
    judge_suites: bool = False
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    noise_sample: int = 20  # completions graded twice to measure the judge's own noise
    instruct: str = "auto"  # auto | on | off
    instruct_n: int = 20
    memorization_n: int = 20
    loss_texts: int = 200
    checkpoints: bool = True
    checkpoint_k: int = 2  # checkpoints are many: fewer samples each, same prompts
    attention_prompt: str | None = None
    cache_path: Path | None = None
    completion_cache_path: Path | None = None
    rejudge_failures: bool = False  # cached parse failures are final unless asked again
    # More judge models at the same endpoint: each grades the GPT-Eval completions too, and the
    # report gives their agreement with the first (Spearman) and among all (Krippendorff).
    extra_judges: list[str] = field(default_factory=list)
    seed: int = 0


class RichProgress:
    """rich progress bars (and their console) behind Progress, for the CLI."""

    def __init__(self, progress, console) -> None:
        self._p = progress
        self._console = console
        self._started = False

    def task(self, description: str, total: int):
        # Started on first use, so an early error prints nothing but its own line.
        if not self._started:
            self._p.start()
            self._started = True
        tid = self._p.add_task(description, total=max(total, 1))
        return lambda n=1: self._p.advance(tid, n)

    def note(self, message: str) -> None:
        self._console.log(message)

    def stop(self) -> None:
        if self._started:
            self._p.stop()
