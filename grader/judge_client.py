"""The judge's transport: generator's engine (rate limits, retries, cost) over its chat client."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from grader.judge import JudgeCallError, JudgeReply, JudgeUnavailable

log = logging.getLogger(__name__)

# Failures that will not go away by themselves: stop the run (judgments so far stay cached).
FATAL_CLASSES = frozenset({"connection", "timeout", "auth", "permission", "not_found"})


@dataclass
class JudgeCost:
    """Judge requests and their cost, fed by the engine's per-request records."""

    requests: int = 0
    failed_requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, billed at the cached input price
    usd: float = 0.0
    unpriced_models: set[str] = field(default_factory=set)

    def to_dict(self) -> dict:
        return {
            "requests": self.requests,
            "failed_requests": self.failed_requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "usd": round(self.usd, 6),
            "unpriced_models": sorted(self.unpriced_models),
        }


def unpriced_note(models: list[str]) -> str:
    """One line: judge models without a price (counted as $0) and how to give them one."""
    from generator.pricing import LOCAL_MODELS_ENV, PRICING_ENV

    names = ",".join(models)
    return (
        f"no price known for {names} (counted as $0): run with {LOCAL_MODELS_ENV}={names} "
        f"for a local judge, or name a pricing file in {PRICING_ENV}"
    )


class _Pricing:
    """generator.pricing's table; an unknown judge model costs 0 and is listed in the report."""

    def __init__(self, cost: JudgeCost) -> None:
        self._cost = cost
        try:
            from generator.pricing import PriceTable

            self._table = PriceTable.load()
        except ImportError:  # pricing module absent in a partial install
            self._table = None

    def cost(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        batch: bool = False,
        cached_tokens: int = 0,
    ) -> float:
        if self._table is None:
            self._cost.unpriced_models.add(model)
            return 0.0
        try:
            return float(
                self._table.cost(
                    model,
                    prompt_tokens,
                    completion_tokens,
                    batch=batch,
                    cached_tokens=cached_tokens,
                )
            )
        except Exception:
            # UnknownModelPrice: a self-hosted judge has no list price.
            self._cost.unpriced_models.add(model)
            return 0.0


class EngineTransport:
    """JudgeTransport over StoryEngine.chat('judge', ...)."""

    def __init__(
        self,
        engine,
        model: str,
        *,
        base_url: str,
        temperature: float,
        max_tokens: int,
        simulator: bool = False,
    ):
        self.engine = engine
        self.simulator = simulator
        self.model = model
        self.base_url = base_url
        self.temperature = temperature
        self.max_tokens = max_tokens

    async def chat(self, messages: list[dict]) -> JudgeReply:
        from generator.engine import BudgetExhausted
        from generator.errors import ProviderError

        try:
            result = await self.engine.chat(
                "judge",
                model=self.model,
                messages=messages,
                max_tokens=self.max_tokens,
                temperature=self.temperature,
            )
        except ProviderError as exc:
            msg = f"{exc.error_class}: {exc.message}".splitlines()[0][:300]
            if exc.error_class in FATAL_CLASSES:
                raise JudgeUnavailable(
                    f"judge {self.model} at {self.base_url} failed ({msg})"
                ) from exc
            raise JudgeCallError(msg) from exc
        except BudgetExhausted as exc:
            raise JudgeUnavailable(f"judge budget exhausted: {exc}") from exc
        return JudgeReply(result.text or "", result.prompt_tokens, result.completion_tokens)


@asynccontextmanager
async def open_transport(
    *,
    model: str,
    base_url: str,
    api_key: str,
    provider: str = "openai",
    rpm: int | None = None,
    tpm: int | None = None,
    max_attempts: int = 4,
    timeout_s: float = 60.0,
    temperature: float = 0.0,
    max_tokens: int = 400,
    cost: JudgeCost | None = None,
) -> AsyncIterator[EngineTransport]:
    """An engine-backed judge transport; the HTTP pool is closed on exit."""
    from generator.client import ChatClient
    from generator.engine import StoryEngine
    from generator.ratelimit import LocalRateLimiter, ModelLimits
    from generator.retry import RetryPolicy

    tally = cost if cost is not None else JudgeCost()

    async def on_request(record) -> None:
        tally.requests += 1
        tally.failed_requests += int(record.outcome != "ok")
        tally.prompt_tokens += record.prompt_tokens
        tally.completion_tokens += record.completion_tokens
        tally.cached_tokens += record.cached_tokens
        tally.usd += record.cost_usd

    client = ChatClient(base_url=base_url, api_key=api_key, timeout_s=timeout_s, provider=provider)
    limiter = LocalRateLimiter({model: ModelLimits(rpm=rpm, tpm=tpm)})
    engine = StoryEngine(
        client=client,
        limiter=limiter,
        pricing=_Pricing(tally),
        retry=RetryPolicy(max_attempts=max_attempts),
        checker=None,  # judge calls are not stories; the engine's checker is not used by chat()
        on_request=on_request,
    )
    try:
        yield EngineTransport(
            engine,
            model,
            base_url=base_url,
            temperature=temperature,
            max_tokens=max_tokens,
            simulator=provider == "simulator",
        )
    finally:
        await client.aclose()


def transport_for(settings: Any, cost: JudgeCost, model: str | None = None) -> Any:
    """`open_transport` from a run's judge settings (grader.config.JudgeSettings), for its
    judge or, with `model`, another judge at the same endpoint."""
    return open_transport(
        model=model or settings.model,
        base_url=settings.base_url,
        api_key=settings.api_key,
        provider="simulator" if settings.simulator else "openai",
        rpm=settings.rpm,
        tpm=settings.tpm,
        max_attempts=settings.max_attempts,
        timeout_s=settings.timeout_s,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
        cost=cost,
    )
