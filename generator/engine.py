"""One unit of work: a story, summary or judge call = limiter + client + retries + pricing + checks.

Each attempt first takes a slot under the model's adaptive concurrency limit and runs under its
learned timeout (`generator.adaptive`). Every attempt becomes a `RequestRecord` (billed tokens
and cost included, also for failures); a story whose attempts are exhausted is a `StoryOutcome`
with `error`/`error_class` set, never an empty story.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from generator.adaptive import AdaptiveController, Slot, shared_controller
from generator.client import ChatClient, ChatResult
from generator.errors import ProviderError
from generator.ratelimit import (
    RateLimiter,
    TokenAccounting,
    TokenEstimator,
    charged_tokens,
    default_accounting,
    estimate_prompt_tokens,
    reserved_tokens,
)
from generator.records import RequestRecord, StoryOutcome
from generator.retry import RetryPolicy

__all__ = [
    "BudgetExhausted",
    "BudgetGuard",
    "RequestRecord",
    "StoryEngine",
    "StoryOutcome",
]

log = logging.getLogger(__name__)

RequestKind = Literal["story", "summary", "judge"]


class BudgetExhausted(Exception):
    """The spending cap does not allow another request."""


class BudgetGuard(Protocol):
    """A spending cap: reserve the worst case before a request, settle the actual cost after."""

    async def reserve(self, usd: float) -> object: ...

    async def settle(self, token: object, actual_usd: float) -> None: ...


OnRequest = Callable[[RequestRecord], Awaitable[None]]


class StoryEngine:
    """Runs rate-limited, retried, costed provider calls and checks the stories."""

    def __init__(
        self,
        *,
        client: ChatClient,
        limiter: RateLimiter,
        pricing: Any,
        retry: RetryPolicy,
        checker: Any,
        template_version: str | None = None,
        on_request: OnRequest | None = None,
        budget: BudgetGuard | None = None,
        estimator: TokenEstimator | None = None,
        accounting: TokenAccounting | None = None,
        adaptive: AdaptiveController | None = None,
        features: tuple[Any, ...] | None = None,
    ) -> None:
        from generator.prompts import DEFAULT_TEMPLATE_VERSION
        from vocab import FEATURES

        self.client = client
        self.limiter = limiter
        self.pricing = pricing
        self.retry = retry
        self.checker = checker
        self.template_version = template_version or DEFAULT_TEMPLATE_VERSION
        self.on_request = on_request
        self.budget = budget
        self.estimator = estimator or TokenEstimator()
        # How the provider counts tokens toward TPM; by default from the endpoint.
        self.accounting = accounting or default_accounting(getattr(client, "base_url", None))
        # Concurrency and timeouts learned per model; by default shared by all engines on `client`.
        self.adaptive = adaptive if adaptive is not None else shared_controller(client)
        self._usage_warned: set[str] = set()  # models whose answers lack usage (warned once)
        # The features recipes may name: by default those of the vocabulary the stories are
        # checked against (a custom vocabulary may bring its own, with their phrasings).
        vocabulary = getattr(checker, "vocabulary", None)
        self.features = features or getattr(vocabulary, "features", None) or FEATURES

    def story_reservation(self, recipe: Any, *, model: str, max_tokens: int = 1024) -> float:
        """USD that `story()`'s first attempt reserves: its prompt estimate at the full
        `max_tokens`, so a caller can reserve it ahead (e.g. together with claiming the work)."""
        messages = self._story_messages(recipe)
        return self.pricing.cost(model, estimate_prompt_tokens(messages), max_tokens)

    def _story_messages(self, recipe: Any) -> list[dict]:
        from generator.prompts import render_story_prompt

        prompt = render_story_prompt(recipe, self.template_version, features=self.features)
        return [{"role": "user", "content": prompt}]

    async def story(
        self, recipe: Any, *, model: str, max_tokens: int = 1024, temperature: float = 1.0
    ) -> StoryOutcome:
        """Write, cost and check one story; failures are returned, not raised.

        `BudgetExhausted` (and a pricing error for an unknown model) do propagate: they are
        decisions for the caller, not failures of this story.
        """
        messages = self._story_messages(recipe)
        prompt = messages[0]["content"]
        records: list[RequestRecord] = []
        try:
            result = await self.chat(
                "story",
                model=model,
                messages=messages,
                max_tokens=max_tokens,
                temperature=temperature,
                records=records,
            )
        except ProviderError as exc:
            outcome = StoryOutcome(
                recipe=recipe,
                prompt=prompt,
                text=None,
                model=model,
                provider=exc.provider or self.client.provider,
                prompt_tokens=sum(r.prompt_tokens for r in records),
                completion_tokens=sum(r.completion_tokens for r in records),
                cached_tokens=sum(r.cached_tokens for r in records),
                cost_usd=sum(r.cost_usd for r in records),
                latency_s=sum(r.latency_s for r in records),
                finish_reason=None,
                checks=None,
                requests=records,
                error=f"{exc.error_class} after {len(records)} attempt(s): {exc.message}",
                error_class=exc.error_class,
            )
            log.warning(
                "story_failed model=%s error_class=%s attempts=%d",
                model,
                exc.error_class,
                len(records),
            )
            return outcome
        checks = self.checker.check(
            result.text,
            finish_reason=result.finish_reason,
            required_words=[recipe.verb, recipe.noun, recipe.adjective],
        )
        outcome = StoryOutcome(
            recipe=recipe,
            prompt=prompt,
            text=result.text,
            model=model,
            provider=result.provider,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cached_tokens=result.cached_tokens,
            cost_usd=sum(r.cost_usd for r in records),
            latency_s=result.latency_s,
            finish_reason=result.finish_reason,
            checks=checks,
            requests=records,
            response_model=result.model,
        )
        log.debug(
            "story_done model=%s accepted=%s rejections=%s attempts=%d cost_usd=%.6f",
            model,
            checks.accepted,
            ",".join(checks.rejections) or "-",
            len(records),
            outcome.cost_usd,
        )
        return outcome

    async def summary(
        self, story: str, *, model: str, max_tokens: int = 200
    ) -> tuple[str | None, list[RequestRecord]]:
        """One or two sentence summary for an Instruct record; None if every attempt failed."""
        from generator.prompts import render_summary_prompt

        records: list[RequestRecord] = []
        prompt = render_summary_prompt(story, self.template_version)
        try:
            result = await self.chat(
                "summary",
                model=model,
                messages=[{"role": "user", "content": prompt}],
                max_tokens=max_tokens,
                records=records,
            )
        except ProviderError:
            return None, records
        text = result.text.strip()
        return (text or None), records

    async def chat(
        self,
        kind: RequestKind,
        *,
        model: str,
        messages: list[dict],
        max_tokens: int | None = None,
        temperature: float = 1.0,
        records: list[RequestRecord] | None = None,
        **extra: Any,
    ) -> ChatResult:
        """A limited, retried and costed call; raises the last `ProviderError` when exhausted."""
        sink = records if records is not None else []

        async def attempt(number: int) -> ChatResult:
            # The slot is taken before budget and rate reservations, so none is held waiting.
            async with self.adaptive.slot(model, max_tokens) as slot:
                return await self._attempt(
                    kind, model, messages, max_tokens, temperature, number, sink, extra, slot
                )

        return await self.retry.run(attempt)

    async def _attempt(
        self,
        kind: str,
        model: str,
        messages: list[dict],
        max_tokens: int | None,
        temperature: float,
        number: int,
        records: list[RequestRecord],
        extra: dict[str, Any],
        slot: Slot,
    ) -> ChatResult:
        prompt_est = estimate_prompt_tokens(messages)
        expected = self.estimator.expected(model, max_tokens)
        est_tokens = reserved_tokens(self.accounting, prompt_est, expected, max_tokens)
        budget_token = None
        if self.budget is not None:
            worst = self.pricing.cost(model, prompt_est, max_tokens or est_tokens)
            budget_token = await self.budget.reserve(worst)

        def estimate() -> int:  # at the head of the limiter's queue, with what it learned since
            expected = self.estimator.expected(model, max_tokens)
            return reserved_tokens(self.accounting, prompt_est, expected, max_tokens)

        fresh = {"estimate": estimate} if getattr(self.limiter, "fresh_estimates", False) else {}
        permit = await self.limiter.acquire(model=model, est_tokens=est_tokens, **fresh)
        started_at = datetime.now(UTC)
        try:
            result = await slot.call(
                self.client.chat(
                    model=model,
                    messages=messages,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    timeout_s=slot.client_timeout_s,
                    **extra,
                )
            )
        except ProviderError as exc:
            billed = exc.prompt_tokens + exc.completion_tokens
            # A rejected (429) request is not counted by the provider; otherwise keep the estimate.
            charged = charged_tokens(
                self.accounting, exc.prompt_tokens, exc.completion_tokens, max_tokens
            )
            actual = charged if billed else (0 if exc.status == 429 else None)
            await self.limiter.settle(
                permit,
                actual_tokens=actual,
                headers=exc.headers,
                status=exc.status,
                retry_after=exc.retry_after,
            )
            cost = self.pricing.cost(
                model, exc.prompt_tokens, exc.completion_tokens, cached_tokens=exc.cached_tokens
            )
            note = exc.message[:500]
            if exc.maybe_billed and not billed:  # usage unknown: the worst case, not $0
                cost = self.pricing.cost(model, prompt_est, max_tokens or est_tokens)
                note = f"{note[:400]}; charged at its worst case (the provider may bill it)"
            if budget_token is not None:
                await self.budget.settle(budget_token, cost)
            record = RequestRecord(
                kind=kind,
                model=model,
                provider=exc.provider or self.client.provider,
                outcome="error",
                error_class=exc.error_class,
                status=exc.status,
                attempt=number,
                prompt_tokens=exc.prompt_tokens,
                completion_tokens=exc.completion_tokens,
                cost_usd=cost,
                latency_s=exc.latency_s,
                finish_reason=None,
                started_at=started_at,
                error=note,
                cached_tokens=exc.cached_tokens,
            )
            await self._record(records, record)
            log.info(
                "request_failed kind=%s model=%s attempt=%d error_class=%s status=%s",
                kind,
                model,
                number,
                exc.error_class,
                exc.status,
            )
            raise
        except BaseException:
            await self.limiter.settle(
                permit, actual_tokens=None, headers=None, status=None, retry_after=None
            )
            if budget_token is not None:
                await self.budget.settle(budget_token, 0.0)
            raise
        note = None
        if not result.usage_reported:  # some servers leave usage out: estimate, never $0
            result = _with_estimated_usage(result, prompt_est, max_tokens)
            note = "the answer had no usage: tokens estimated (about 4 characters a token)"
            if model not in self._usage_warned:
                self._usage_warned.add(model)
                log.warning("usage_missing model=%s: tokens and cost are estimates", model)
        await self.limiter.settle(
            permit,
            actual_tokens=charged_tokens(
                self.accounting, result.prompt_tokens, result.completion_tokens, max_tokens
            ),
            headers=result.headers,
            status=200,
            retry_after=None,
        )
        self.estimator.observe(model, result.completion_tokens)
        cost = self.pricing.cost(
            model,
            result.prompt_tokens,
            result.completion_tokens,
            cached_tokens=result.cached_tokens,
        )
        if budget_token is not None:
            await self.budget.settle(budget_token, cost)
        await self._record(
            records,
            RequestRecord(
                kind=kind,
                model=model,
                provider=result.provider,
                outcome="ok",
                error_class=None,
                status=200,
                attempt=number,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                cost_usd=cost,
                latency_s=result.latency_s,
                finish_reason=result.finish_reason,
                started_at=started_at,
                error=note,
                cached_tokens=result.cached_tokens,
            ),
        )
        return result

    async def _record(self, records: list[RequestRecord], record: RequestRecord) -> None:
        records.append(record)
        if self.on_request is not None:
            await self.on_request(record)


def _with_estimated_usage(
    result: ChatResult, prompt_est: int, max_tokens: int | None
) -> ChatResult:
    """`result` with token counts estimated from the prompt and the text (a cut-off answer
    used its whole `max_tokens`)."""
    if result.finish_reason == "length" and max_tokens:
        completion = max_tokens
    else:
        completion = len(result.text) // 4 + 1  # the same rule of thumb as prompts
    return dataclasses.replace(
        result, prompt_tokens=prompt_est, completion_tokens=max(1, completion)
    )
