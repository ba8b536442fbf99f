"""A finished provider batch read back as task results: each answer through the same path as
an online story (checks, Instruct summary, after_story hooks), each failure with its reason."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from service import store
from service.store.batches import BATCH_OWNER


async def task_results(
    processor: Any, tasks: list[Any], results: Any, status: Any, *, provider: str
) -> tuple[list[tuple[Any, Any]], float]:
    """(task, TaskResult) for every task of a finished batch, and what the same answers
    would have cost online (the money the batch saved). `provider` (the endpoint that ran the
    batch: a pool member's name) is what request rows and stories name."""
    from generator.batch_files import BatchSuccess

    elapsed = max(0.0, datetime.now(UTC).timestamp() - float(status.created_at or 0))
    started = datetime.now(UTC)
    online = 0.0

    async def one(task: Any) -> tuple[Any, Any]:
        nonlocal online
        result = results.results.get(str(task.id))
        engine = processor.engines.for_task(task)
        if isinstance(result, BatchSuccess):
            online += _cost(engine, task, result, batch=False)
            return task, await _story(processor, task, engine, result, elapsed, started, provider)
        if result is None:  # no line for it in either file: send again (attempts bound it)
            return task, store.TaskResult(outcome="retry", error="missing from the batch output")
        record = _record(task, result, elapsed, started, engine, provider, ok=False)
        online += _cost(engine, task, result, batch=False)
        outcome = (
            "release"
            if result.reason in ("expired", "cancelled")
            else ("retry" if result.retryable else "fail")
        )
        return task, store.TaskResult(
            outcome=outcome, requests=[record], error=f"{result.reason}: {result.message}"
        )

    gate = asyncio.Semaphore(32)

    async def gated(task: Any) -> tuple[Any, Any]:
        async with gate:
            return await one(task)

    return list(await asyncio.gather(*(gated(t) for t in tasks))), online


async def _story(
    processor: Any,
    task: Any,
    engine: Any,
    result: Any,
    elapsed: float,
    started: datetime,
    provider: str,
) -> Any:
    from generator.prompts import render_story_prompt
    from generator.records import StoryOutcome
    from service.work.shared_limits import TaskContext, current_task
    from vocab import Recipe

    recipe = Recipe.from_dict(task.recipe)
    record = _record(task, result, elapsed, started, engine, provider, ok=True)
    outcome = StoryOutcome(
        recipe=recipe,
        prompt=render_story_prompt(recipe, task.template_version),
        text=result.text,
        model=task.model,
        provider=record.provider,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        cached_tokens=result.cached_tokens,
        cost_usd=record.cost_usd,
        latency_s=elapsed,
        finish_reason=result.finish_reason,
        checks=engine.checker.check(
            result.text,
            finish_reason=result.finish_reason,
            required_words=[recipe.verb, recipe.noun, recipe.adjective],
        ),
        requests=[record],
        response_model=result.model or None,
    )
    # Summaries of Instruct jobs are online calls, reserved and recorded as a worker's are.
    ctx = TaskContext(job_id=task.job_id, task_id=task.id, worker_id=BATCH_OWNER)
    current_task.set(ctx)
    try:
        done = await processor.story_result(task, engine, recipe, outcome)
    except Exception as exc:  # a failed summary: the story goes back for another batch
        return store.TaskResult(outcome="retry", requests=[record, *ctx.requests], error=str(exc))
    return store.TaskResult(
        outcome=done.outcome, story=done.story, requests=[record, *ctx.requests]
    )


def _record(
    task: Any,
    result: Any,
    elapsed: float,
    started: datetime,
    engine: Any,
    provider: str,
    ok: bool,
) -> Any:
    from generator.records import RequestRecord

    return RequestRecord(
        kind="story",
        model=task.model,
        provider=provider,
        outcome="ok" if ok else "error",
        error_class=None if ok else result.reason,
        status=200 if ok else result.status,
        attempt=task.attempts,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        cost_usd=_cost(engine, task, result, batch=True),
        latency_s=elapsed,
        finish_reason=getattr(result, "finish_reason", None),
        started_at=started,
        cached_tokens=result.cached_tokens,
    )


def _cost(engine: Any, task: Any, result: Any, *, batch: bool) -> float:
    """USD for a batch line's usage, cached prompt tokens at the cached price."""
    return engine.pricing.cost(
        task.model,
        result.prompt_tokens,
        result.completion_tokens,
        batch=batch,
        cached_tokens=result.cached_tokens,
    )
