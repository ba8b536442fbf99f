"""Turning one claimed task into a result: story, instruct summary and header, hooks."""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, Decimal
from typing import Any

from generator.errors import RETRYABLE
from service import store
from service.dataset.minhash import MinHashParams, text_hash
from service.store.queue import ClaimedTask

# A call of a job with a known mean length reserves this many times the mean (plus 20 tokens).
RESERVE_MARGIN = 1.5


class StoryProcessor:
    """Turns one claimed task into a TaskResult: story, summary for instruct jobs, instruct text.

    Subclass or replace `after_story` to add per-story work (dedup, ...) that must finish
    before the story is written; it may change the story dict in place.
    """

    def __init__(self, engines: Any) -> None:
        self.engines = engines

    def plan(self, task: ClaimedTask) -> tuple[float, Decimal, Decimal]:
        """(worst-case USD of a story call, USD it reserves, worst over reserved).

        A new job reserves the worst case (the full `max_tokens`). Once it has made a few
        stories (`LEARN_AFTER_STORIES`), a call reserves its mean length with a margin: a
        call cut short by a dead worker is charged about what the provider billed, not three
        times that. The factor keeps the bill within the budget (store.reserve_budget).
        """
        from vocab import Recipe

        engine = self.engines.for_task(task)
        recipe = Recipe.from_dict(task.recipe)
        worst = float(
            engine.story_reservation(recipe, model=task.model, max_tokens=task.max_tokens)
        )
        if task.mean_completion is None or worst <= 0:
            return worst, store.jobs.money(worst), Decimal(1)
        tokens = min(task.max_tokens, math.ceil(task.mean_completion * RESERVE_MARGIN) + 20)
        expected = float(engine.story_reservation(recipe, model=task.model, max_tokens=tokens))
        reserve = store.jobs.money(expected)
        if reserve <= 0:
            return worst, store.jobs.money(worst), Decimal(1)
        # Rounded up, with 5% to spare for a job whose mean drifts down while calls are out.
        factor = (Decimal(repr(worst)) * Decimal("1.05") / reserve).quantize(
            Decimal("0.0001"), rounding=ROUND_CEILING
        )
        return worst, reserve, max(factor, Decimal(1))

    def reservation(self, task: ClaimedTask) -> float:
        """USD the task's first story request reserves (reserved ahead, at claim time)."""
        return float(self.plan(task)[1])

    def affordable_tokens(self, task: ClaimedTask, usd: float) -> tuple[int, int]:
        """(completion tokens `usd` pays for on top of the story prompt, the fewest worth
        asking for: the engine's running mean of answered completions, with a margin)."""
        from vocab import Recipe

        engine = self.engines.for_task(task)
        recipe = Recipe.from_dict(task.recipe)
        base = engine.story_reservation(recipe, model=task.model, max_tokens=0)
        per_token = engine.story_reservation(recipe, model=task.model, max_tokens=1) - base
        tokens = task.max_tokens if per_token <= 0 else int((usd - base) / per_token)
        expected = engine.estimator.expected(task.model, task.max_tokens)
        return min(max(tokens, 0), task.max_tokens), min(int(expected * 1.25) + 1, task.max_tokens)

    async def process(self, task: ClaimedTask, max_tokens: int | None = None) -> store.TaskResult:
        """Run the provider calls of one task (requests are collected by the context).

        `max_tokens`: a cap below the job's (the last stories a budget pays for).
        """
        from vocab import Recipe

        engine = self.engines.for_task(task)
        recipe = Recipe.from_dict(task.recipe)
        outcome = await engine.story(
            recipe, model=task.model, max_tokens=min(max_tokens or task.max_tokens, task.max_tokens)
        )
        if outcome.text is None:
            return store.TaskResult(
                outcome="retry" if RETRYABLE.get(outcome.error_class or "", True) else "fail",
                error=outcome.error or "no text",
                error_class=outcome.error_class,
            )
        return await self.story_result(task, engine, recipe, outcome)

    async def story_result(
        self, task: ClaimedTask, engine: Any, recipe: Any, outcome: Any
    ) -> store.TaskResult:
        """The stored form of a story the provider wrote (online, or read from a batch's
        output): checks, instruct summary and header, after_story hooks."""
        checks = outcome.checks
        story: dict[str, Any] = {
            "text": outcome.text.replace("\x00", ""),  # Postgres text cannot hold NUL
            "verb": recipe.verb,
            "noun": recipe.noun,
            "adjective": recipe.adjective,
            "features": list(recipe.features),
            "prompt": outcome.prompt,
            "model": outcome.model,
            "provider": outcome.provider,
            "prompt_tokens": outcome.prompt_tokens,
            "completion_tokens": outcome.completion_tokens,
            "cost_usd": store.jobs.money(outcome.cost_usd),
            "latency_s": outcome.latency_s,
            "finish_reason": outcome.finish_reason,
            "checks": checks.to_dict() if checks is not None else None,
            "accepted": bool(outcome.accepted),
            "rejection_reasons": list(checks.rejections) if checks is not None else [],
            "source": "generated",
        }
        if outcome.accepted and task.instruct:
            await self._instruct(engine, task, recipe, story)
        await self.after_story(task, story)
        return store.TaskResult(outcome="story", story=story)

    async def _instruct(self, engine: Any, task: ClaimedTask, recipe: Any, story: dict) -> None:
        from generator.instruct import instruct_header, random_sentence, render_instruct_record

        summary, _ = await engine.summary(story["text"], model=task.summary_model)
        if summary is None:
            raise SummaryFailed("summary call failed after retries")
        seed = hash_seed(task.seed, task.index)
        record = render_instruct_record(
            story=story["text"],
            summary=summary,
            words=[recipe.verb, recipe.noun, recipe.adjective],
            features=list(recipe.features),
            random_sentence=random_sentence(story["text"], seed),
            seed=seed,
        )
        story["summary"] = summary
        story["instruction"] = instruct_header(record)

    async def after_story(self, task: ClaimedTask, story: dict[str, Any]) -> None:
        """Hook for per-story work before the story is stored; no-op by default."""


class DedupStoryProcessor(StoryProcessor):
    """StoryProcessor that hashes each story's normalised text on arrival (outside the
    transaction); the near-duplicate check follows within moments
    (:func:`service.dataset.dedup.index_pending`)."""

    def __init__(self, engines: Any, params: MinHashParams | None = None) -> None:
        super().__init__(engines)
        self.params = params or MinHashParams()

    async def after_story(self, task: ClaimedTask, story: dict[str, Any]) -> None:
        await super().after_story(task, story)
        story["text_hash"] = text_hash(story["text"])


class SummaryFailed(Exception):
    """Every attempt at an instruct summary failed: the task is retried."""


def hash_seed(seed: int, index: int) -> int:
    """A per-story seed from the job seed and the task index."""
    return (seed * 1_000_003 + index) & 0x7FFF_FFFF_FFFF
