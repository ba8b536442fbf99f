"""The judge's cost over real HTTP: prompt-cache hits billed at the cached input price."""

from __future__ import annotations

import pytest

from generator.pricing import LOCAL_MODELS_ENV, PRICING_ENV, PriceTable
from grader.judge_client import JudgeCost, open_transport

USAGE = {
    "prompt_tokens": 1800,
    "completion_tokens": 40,
    "total_tokens": 1840,
    "prompt_tokens_details": {"cached_tokens": 1536},
}


async def test_judge_cost_bills_cached_prompt_tokens_at_the_cached_price(
    fake_provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PRICING_ENV, raising=False)
    monkeypatch.delenv(LOCAL_MODELS_ENV, raising=False)
    message = {"role": "assistant", "content": "Grammar: 8/10"}
    answer = {
        "model": "gpt-4.1",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": USAGE,
    }
    url, _ = fake_provider(lambda *_: (200, answer))
    cost = JudgeCost()
    async with open_transport(model="gpt-4.1", base_url=url, api_key="k", cost=cost) as judge:
        for _ in range(2):
            reply = await judge.chat([{"role": "user", "content": "Grade this story."}])
            assert reply.text == "Grammar: 8/10"
    # gpt-4.1: $2.00 input, $0.50 cached, $8.00 output per 1M tokens.
    one = (264 * 2.0 + 1536 * 0.5 + 40 * 8.0) / 1e6
    assert cost.usd == pytest.approx(2 * one)
    assert cost.usd < 2 * PriceTable.load().cost("gpt-4.1", 1800, 40)
    assert cost.to_dict()["cached_tokens"] == 2 * 1536 and cost.prompt_tokens == 3600
