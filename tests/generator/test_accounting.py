"""Token accounting, `actual` or `max_tokens` (OpenAI, Azure): in the simulator and our client."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from generator.checks import StoryChecker
from generator.client import ChatClient
from generator.engine import StoryEngine
from generator.pricing import PriceTable
from generator.ratelimit import (
    LocalRateLimiter,
    ModelLimits,
    charged_tokens,
    default_accounting,
    reserved_tokens,
)
from generator.retry import RetryPolicy
from generator.simulator import SimulatorConfig
from vocab import RecipeSampler

MODEL = "simulator-story-1"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a story."}]}


@pytest.mark.parametrize(
    ("url", "mode"),
    [
        (None, "max_tokens"),
        ("https://api.openai.com/v1", "max_tokens"),
        ("https://myres.openai.azure.com/openai/deployments/gpt-4o", "max_tokens"),
        ("https://myres.cognitiveservices.azure.com/openai/v1", "max_tokens"),
        ("http://127.0.0.1:8100/v1", "actual"),
        ("http://vllm.internal:8000/v1", "actual"),
        ("https://notapi.openai.com.example.org/v1", "actual"),
    ],
)
def test_default_accounting_by_endpoint(url: str | None, mode: str) -> None:
    assert default_accounting(url) == mode


def test_reserved_and_charged_tokens_by_mode() -> None:
    assert reserved_tokens("actual", 90, 180, 1024) == 270
    assert reserved_tokens("max_tokens", 90, 180, 1024) == 1114
    assert reserved_tokens("max_tokens", 90, 180, None) == 270  # no cap sent: nothing to count
    assert charged_tokens("actual", 77, 181, 1024) == 258
    assert charged_tokens("max_tokens", 77, 181, 1024) == 1101


def test_config_rejects_unknown_accounting() -> None:
    with pytest.raises(ValueError, match="token_accounting"):
        SimulatorConfig(token_accounting="estimated")


@pytest.mark.parametrize("mode", ["actual", "max_tokens"])
def test_simulator_charges_by_its_accounting(simulator_factory, mode: str) -> None:
    url = simulator_factory(SimulatorConfig(tpm=600_000, token_accounting=mode))
    with httpx.Client(base_url=url) as http:
        t0 = http.get("/simulator/stats").json()["now"]
        answer = http.post("/chat/completions", json={**BODY, "max_tokens": 500})
        assert answer.status_code == 200
        usage = answer.json()["usage"]
        stats = http.get("/simulator/stats", params={"since": t0}).json()
        bad = http.get("/simulator/stats", params={"since": "soon"})
    assert usage["completion_tokens"] < 500  # the answer reports what was generated ...
    expected = usage["prompt_tokens"] + (
        500 if mode == "max_tokens" else usage["completion_tokens"]
    )
    assert stats["charged_tokens"] == expected  # ... the limit counts by the accounting mode
    assert stats["token_accounting"] == mode
    # The header is what is left after this charge (plus refill since: it only grows).
    assert int(answer.headers["x-ratelimit-remaining-tokens"]) >= 600_000 / 60 * 2.0 - expected - 1
    assert [b[1:] for b in stats["timeline"]["bins"]] == [[1, expected, 0]]
    assert stats["timeline"]["bin_s"] == 0.1
    assert bad.status_code == 400 and "since" in bad.json()["error"]["message"]


def make_engine(url: str, limiter: LocalRateLimiter, mode: str | None) -> StoryEngine:
    return StoryEngine(
        client=ChatClient(base_url=url, api_key="k", provider="simulator", timeout_s=10),
        limiter=limiter,
        pricing=PriceTable.load(),
        retry=RetryPolicy(max_attempts=4, base_s=0.01, max_s=0.05, jitter=0.01),
        checker=StoryChecker(),
        accounting=mode,  # type: ignore[arg-type]
    )


async def test_engine_accounting_defaults_to_the_endpoint(simulator) -> None:
    engine = make_engine(simulator, LocalRateLimiter(), None)
    assert engine.accounting == "actual"  # a local OpenAI-compatible server
    await engine.client.aclose()


@pytest.mark.parametrize("mode", ["actual", "max_tokens"])
async def test_limiter_books_what_the_simulator_charges(simulator_factory, mode: str) -> None:
    """After the answers, our bucket has been charged exactly what the provider counted."""
    url = simulator_factory(SimulatorConfig(tpm=600_000, token_accounting=mode))
    limiter = LocalRateLimiter({MODEL: ModelLimits(tpm=600_000)})
    engine = make_engine(url, limiter, mode)
    sampler = RecipeSampler()
    outcomes = await asyncio.gather(
        *(engine.story(sampler.recipe(3, i), model=MODEL, max_tokens=700) for i in range(6))
    )
    await engine.client.aclose()
    assert all(o.text for o in outcomes)
    async with httpx.AsyncClient(base_url=url) as http:
        stats = (await http.get("/simulator/stats")).json()
    assert stats["rejected"] == 0
    assert limiter._state(MODEL).tokens.taken_total == pytest.approx(stats["charged_tokens"])
    assert stats["charged_tokens"] == sum(
        o.prompt_tokens + (700 if mode == "max_tokens" else o.completion_tokens) for o in outcomes
    )


async def test_max_tokens_accounting_draws_no_429_where_estimates_would(simulator_factory) -> None:
    """A provider counting max_tokens at admission: budgeting by expected completions overshoots
    its bucket (429s); budgeting by max_tokens does not."""
    rejected = {}
    for mode in ("actual", "max_tokens"):
        # 20,000 TPM: the provider holds 3 s of refill (1,000 tokens, 333/s), we hold 2 s (667).
        # Two requests at max_tokens=700 are charged ~711 each: after the first, the provider
        # has room for the second ~1.3 s later. Budgeting by expected completions (~412 each)
        # sends it ~0.5 s later (429); budgeting by max_tokens ~2.1 s later (admitted).
        config = SimulatorConfig(tpm=20_000, burst_s=3.0, token_accounting="max_tokens")
        url = simulator_factory(config)
        limiter = LocalRateLimiter({MODEL: ModelLimits(tpm=20_000)}, burst_s=2.0)
        engine = make_engine(url, limiter, mode)
        messages = [{"role": "user", "content": f"Tell me story number {i}."} for i in range(2)]
        results = await asyncio.gather(
            *(engine.chat("story", model=MODEL, messages=[m], max_tokens=700) for m in messages)
        )
        await engine.client.aclose()
        assert all(r.text for r in results)
        async with httpx.AsyncClient(base_url=url) as http:
            rejected[mode] = (await http.get("/simulator/stats")).json()["rejected"]
    assert rejected["max_tokens"] == 0
    assert rejected["actual"] > 0
