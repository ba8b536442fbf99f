"""The `tinystories generate` job: N recipes -> stories (client, limiter, retries) -> JSONL.

Writes `stories.jsonl` (one row per story: recipe, prompt, text, model, provider, usage, cost,
latency, finish_reason, checks, accepted, vocabulary), `requests.jsonl` (one row per attempt)
and `vocabulary.json` (the vocabulary recipes came from and stories were checked against).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from generator.adaptive import AdaptiveConfig, AdaptiveController
from generator.client import ClientConfig
from generator.engine import RequestRecord, StoryEngine, StoryOutcome
from generator.progress import format_rate
from generator.ratelimit import LocalRateLimiter, ModelLimits
from generator.retry import RetryPolicy

log = logging.getLogger(__name__)


@dataclass
class GenerateSummary:
    """Totals of one run."""

    stories: int = 0
    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    requests: int = 0
    cost_usd: float = 0.0
    elapsed_s: float = 0.0
    rejections: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    # The first message of each failure class: what a user reads when nothing came back.
    failure_examples: dict[str, str] = field(default_factory=dict)

    def add(self, outcome: StoryOutcome) -> None:
        self.stories += 1
        self.cost_usd += outcome.cost_usd
        if outcome.error is not None:
            self.failed += 1
            self.failures[outcome.error_class or "unknown"] += 1
            self.failure_examples.setdefault(outcome.error_class or "unknown", outcome.error)
        elif outcome.accepted:
            self.accepted += 1
        else:
            self.rejected += 1
            self.rejections.update(outcome.checks.rejections)

    def line(self) -> str:
        def detail(counter: Counter[str]) -> str:
            if not counter:
                return ""
            return " (" + ", ".join(f"{k}={v}" for k, v in counter.most_common()) + ")"

        rate = self.stories / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (
            f"generate: stories={self.stories} accepted={self.accepted} "
            f"rejected={self.rejected}{detail(self.rejections)} "
            f"failed={self.failed}{detail(self.failures)} requests={self.requests} "
            f"cost_usd={self.cost_usd:.4f} rate={format_rate(rate, 'stories')}"
        )

    def nothing_accepted(self, top: int = 3) -> str | None:
        """Why no story was accepted (top rejection checks, failure classes with an example
        message), or None when some were."""
        if self.accepted or not self.stories:
            return None
        parts = []
        if self.rejected:
            reasons = ", ".join(f"{k} {v}" for k, v in self.rejections.most_common(top))
            parts.append(f"{self.rejected} rejected by the checks ({reasons})")
        if self.failed:
            reasons = ", ".join(
                f"{k} {v}: {' '.join(self.failure_examples[k].split())[:160]}"
                for k, v in self.failures.most_common(top)
            )
            parts.append(f"{self.failed} failed ({reasons})")
        return f"no story was accepted of {self.stories}: " + "; ".join(parts)


def _write(handle: IO[bytes], row: dict) -> None:
    handle.write(orjson.dumps(row) + b"\n")


async def generate_stories(
    *,
    recipes: list,
    out_dir: Path,
    client_config: ClientConfig,
    model: str,
    pricing: object,
    checker: object,
    concurrency: int = 32,
    limits: ModelLimits | None = None,
    retry: RetryPolicy | None = None,
    max_tokens: int = 1024,
    template_version: str | None = None,
    on_story: Callable[[StoryOutcome], None] | None = None,
    adaptive: AdaptiveConfig | None = None,
    vocabulary: Any = None,
) -> GenerateSummary:
    """One story per recipe, at most `concurrency` requests in flight (fewer while the server
    queues: `adaptive`, by default on); one failure never stops the rest.

    `vocabulary` (by default the checker's): recorded in `vocabulary.json` with its words,
    and by name and content hash on every story row."""
    summary = GenerateSummary()
    vocabulary = vocabulary if vocabulary is not None else getattr(checker, "vocabulary", None)
    used: dict[str, str] = {}
    if vocabulary is not None:
        used = {"name": vocabulary.name, "sha256": vocabulary.sha256}
        write_vocabulary(out_dir / "vocabulary.json", vocabulary)
    limiter = LocalRateLimiter({model: limits} if limits else None, max_concurrency=concurrency)
    adaptive = adaptive or AdaptiveConfig()
    controller = AdaptiveController(
        dataclasses.replace(adaptive, max_concurrency=min(adaptive.max_concurrency, concurrency)),
        initial_timeout_s=client_config.timeout_s,  # until the first answers are in
        limits={model: limits} if limits else None,
    )
    started = time.perf_counter()
    with (
        (out_dir / "stories.jsonl").open("wb") as stories_file,
        (out_dir / "requests.jsonl").open("wb") as requests_file,
    ):

        async def on_request(record: RequestRecord) -> None:
            summary.requests += 1
            _write(requests_file, record.to_dict())

        client = client_config.build()
        engine = StoryEngine(
            client=client,
            limiter=limiter,
            pricing=pricing,
            retry=retry or RetryPolicy(),
            checker=checker,
            template_version=template_version,
            on_request=on_request,
            adaptive=controller,
        )
        next_index = iter(range(len(recipes)))

        async def worker() -> None:
            for index in next_index:
                outcome = await engine.story(recipes[index], model=model, max_tokens=max_tokens)
                row = {"index": index, **outcome.to_dict()}
                if used:
                    row["vocabulary"] = used
                _write(stories_file, row)
                summary.add(outcome)
                if on_story is not None:
                    on_story(outcome)

        try:
            await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(recipes))))))
        finally:
            await client.aclose()
    summary.elapsed_s = time.perf_counter() - started
    log.info("generate_done %s", summary.line())
    return summary


def write_vocabulary(path: Path, vocabulary: Any) -> None:
    """The run's vocabulary, as a json vocabulary file (`generate --vocab` reads it back, to
    repeat the run): name and words, and as notes its content hash, sizes and source."""
    identity = vocabulary.identity()
    data = {
        "name": vocabulary.name,
        "_sha256": identity["sha256"],
        "_size": {role: identity[role] for role in ("noun", "verb", "adjective")},
        "_source": vocabulary.source,
        "nouns": list(vocabulary.nouns),
        "verbs": list(vocabulary.verbs),
        "adjectives": list(vocabulary.adjectives),
        "features": [{"name": f.name, "phrase": f.phrase} for f in vocabulary.features],
    }
    path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
