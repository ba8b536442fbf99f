"""Prompt-cache hits billed at the cached input price, over real HTTP: OpenAI's and DeepSeek's
usage shapes through our client and the `openai` SDK, failures that carry usage, Batch API
output lines, and the simulator's own prompt caching."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from generator.batch_files import BatchSuccess, parse_results
from generator.client import ChatClient
from generator.errors import ProviderError, usage_of
from generator.pricing import LOCAL_MODELS_ENV, PRICING_ENV, PriceTable
from generator.retry import RetryPolicy
from generator.simulator import SimulatorConfig
from tests.generator.test_engine import make_engine

NO_RETRY = RetryPolicy(max_attempts=1, base_s=0.0, max_s=0.0, jitter=0.0)
MESSAGES = [{"role": "user", "content": "Write a story about a red ball."}]
OPENAI_USAGE = {
    "prompt_tokens": 2048,
    "completion_tokens": 100,
    "total_tokens": 2148,
    "prompt_tokens_details": {"cached_tokens": 1536, "audio_tokens": 0},
}
DEEPSEEK_USAGE = {
    "prompt_tokens": 2048,
    "completion_tokens": 100,
    "total_tokens": 2148,
    "prompt_cache_hit_tokens": 1536,
    "prompt_cache_miss_tokens": 512,
}
DEEPSEEK_PRICES = {"deepseek-chat": {"input": 0.28, "cached_input": 0.028, "output": 0.42}}


@pytest.fixture(autouse=True)
def _packaged_prices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PRICING_ENV, raising=False)
    monkeypatch.delenv(LOCAL_MODELS_ENV, raising=False)


def answer_with(usage: dict[str, Any], **message: Any) -> dict[str, Any]:
    content = {"role": "assistant", "content": "Once upon a time.", **message}
    choice = {"index": 0, "message": content, "finish_reason": "stop"}
    return {"model": "m", "choices": [choice], "usage": usage}


@pytest.mark.parametrize(
    ("model", "usage"), [("gpt-4o-mini", OPENAI_USAGE), ("deepseek-chat", DEEPSEEK_USAGE)]
)
@pytest.mark.parametrize("typed", [False, True])
async def test_cached_prompt_tokens_are_billed_at_the_cached_price(
    fake_provider, model, usage, typed
) -> None:
    url, _ = fake_provider(lambda *_: (200, answer_with(usage)))
    client = ChatClient(base_url=url, api_key="k", provider="p", typed=typed)
    engine, records = make_engine("", client=client, retry=NO_RETRY)
    engine.pricing = prices = PriceTable.load().with_prices(DEEPSEEK_PRICES)
    try:
        result = await engine.chat("story", model=model, messages=MESSAGES, max_tokens=200)
    finally:
        await client.aclose()
    assert result.prompt_tokens == 2048 and result.cached_tokens == 1536
    (record,) = records
    assert record.cached_tokens == 1536 and record.to_dict()["cached_tokens"] == 1536
    price = prices.price(model)
    expected = (512 * price.input + 1536 * price.cached_input + 100 * price.output) / 1e6
    assert record.cost_usd == pytest.approx(expected)
    assert record.cost_usd < prices.cost(model, 2048, 100)


async def test_a_failure_with_usage_bills_its_cached_tokens_at_the_cached_price(
    fake_provider,
) -> None:
    refusal = answer_with(OPENAI_USAGE, content=None, refusal="I can't help with that.")
    url, _ = fake_provider(lambda *_: (200, refusal))
    client = ChatClient(base_url=url, api_key="k", provider="p")
    engine, records = make_engine("", client=client, retry=NO_RETRY)
    try:
        with pytest.raises(ProviderError) as refused:
            await engine.chat("story", model="gpt-4o", messages=MESSAGES, max_tokens=200)
    finally:
        await client.aclose()
    assert refused.value.error_class == "content_filter" and refused.value.cached_tokens == 1536
    (record,) = records
    assert record.outcome == "error" and record.cached_tokens == 1536
    assert record.cost_usd == pytest.approx((512 * 2.5 + 1536 * 1.25 + 100 * 10) / 1e6)


@pytest.mark.parametrize(
    ("usage", "cached"),
    [
        ({"prompt_tokens": 10, "completion_tokens": 2}, 0),
        ({"prompt_tokens": 10, "prompt_tokens_details": None}, 0),
        ({"prompt_tokens": 10, "prompt_tokens_details": [5]}, 0),
        ({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": None}}, 0),
        ({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": "many"}}, 0),
        ({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": -4}}, 0),
        ({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": True}}, 0),
        ({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 4.0}}, 4),
        ({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 99}}, 10),
        ({"prompt_tokens": 10, "prompt_cache_hit_tokens": 6, "prompt_cache_miss_tokens": 4}, 6),
        ({"prompt_tokens": 10, "prompt_cache_hit_tokens": None}, 0),
        ({"prompt_tokens_details": {"cached_tokens": 5}}, 0),  # no prompt: nothing cached
    ],
)
def test_cached_tokens_are_read_robustly(usage, cached) -> None:
    read = usage_of({"usage": usage})
    assert read.cached_tokens == cached and read.prompt_tokens == usage.get("prompt_tokens", 0)


def test_batch_output_lines_bill_cached_tokens_at_the_discounted_cached_price() -> None:
    def line(custom_id: str, usage: dict[str, Any]) -> dict[str, Any]:
        body = {**answer_with(usage), "model": "gpt-4o-mini-2024-07-18"}
        return {
            "id": f"batch_req_{custom_id}",
            "custom_id": custom_id,
            "response": {"status_code": 200, "request_id": "req_1", "body": body},
            "error": None,
        }

    output = b"\n".join(
        orjson.dumps(line(i, u)) for i, u in (("a", OPENAI_USAGE), ("b", DEEPSEEK_USAGE))
    )
    results = parse_results(["a", "b"], output, None)
    prices = PriceTable.load()
    for custom_id in ("a", "b"):
        success = results.results[custom_id]
        assert isinstance(success, BatchSuccess) and success.cached_tokens == 1536
        # gpt-4o-mini: $0.15 input, $0.075 cached, $0.60 output, half price in a batch.
        expected = (512 * 0.15 + 1536 * 0.075 + 100 * 0.60) / 1e6 * 0.5
        assert success.cost(prices) == pytest.approx(expected)
    assert results.cost(prices) == pytest.approx(2 * expected)


def long_prompt(words: int, tail: str = "") -> list[dict[str, str]]:
    text = " ".join(f"w{i}" for i in range(words))
    return [{"role": "system", "content": text}, {"role": "user", "content": f"Go on. {tail}"}]


async def test_the_simulator_reports_cached_tokens_for_a_repeated_long_prompt(
    simulator_factory,
) -> None:
    url = simulator_factory(SimulatorConfig())

    async def usage(http: httpx.AsyncClient, messages: list[dict], model: str) -> dict[str, Any]:
        body = {"model": model, "messages": messages, "max_tokens": 20}
        answer = await http.post(f"{url}/chat/completions", json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()["usage"]

    def cached(usage: dict[str, Any]) -> int:
        return usage["prompt_tokens_details"]["cached_tokens"]

    model = "simulator-judge-1"
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(2):  # a story-sized prompt is never cached, but says so
            assert cached(await usage(http, MESSAGES, model)) == 0
        first = await usage(http, long_prompt(1500), model)
        assert first["prompt_tokens"] == 1509 and cached(first) == 0
        # The same prompt again: its longest 128-token step of 1024 or more, 1408 tokens.
        assert cached(await usage(http, long_prompt(1500), model)) == 1408
        # Another question after the same 1500 words shares their prefix.
        assert cached(await usage(http, long_prompt(1500, "Now stop."), model)) == 1408
        # A prompt that departs after 1100 tokens: only the first 1024 match.
        departed = long_prompt(1500)
        departed[0]["content"] = departed[0]["content"].replace("w1100 ", "x1100 ")
        assert cached(await usage(http, departed, model)) == 1024
        # Another model has a cache of its own.
        assert cached(await usage(http, long_prompt(1500), "simulator-story-1")) == 0


@pytest.mark.parametrize("style", ["openai", "deepseek"])
async def test_simulator_cache_hits_reach_the_request_records(simulator_factory, style) -> None:
    url = simulator_factory(SimulatorConfig(usage_style=style))
    engine, records = make_engine(url, retry=NO_RETRY)
    try:
        for _ in range(2):
            await engine.chat("judge", model="simulator-judge-1", messages=long_prompt(1200))
    finally:
        await engine.client.aclose()
    assert [r.cached_tokens for r in records] == [0, 1152]
    # simulator-*: $0.10 input, $0.05 cached, $0.20 output.
    second = records[1]
    miss = second.prompt_tokens - 1152
    expected = (miss * 0.10 + 1152 * 0.05 + second.completion_tokens * 0.20) / 1e6
    assert second.cost_usd == pytest.approx(expected)
