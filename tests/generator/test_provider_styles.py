"""What real providers do that a friendly server would not, over real HTTP: reasoning models'
parameters, Azure's deployment URLs, refusals, answers without usage, gateway and deadline
timeouts, an empty account, daily limits in rate headers, proxies, keys echoed in errors."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest

from generator.adaptive import AdaptiveConfig, AdaptiveController
from generator.breaker import CLOSED, OPEN, BreakerPolicy
from generator.client import ChatClient
from generator.engine import RequestRecord, StoryEngine
from generator.errors import ProviderError, redact
from generator.pool import MemberConfig, ProviderPool, ProviderPools
from generator.pricing import PriceTable
from generator.retry import RetryPolicy
from generator.simulator import SimulatorConfig
from tests.generator.test_engine import make_engine
from vocab import Recipe

MESSAGES = [{"role": "user", "content": "Write a story about a red ball."}]
NO_RETRY = RetryPolicy(max_attempts=1, base_s=0.0, max_s=0.0, jitter=0.0)
FAST = RetryPolicy(max_attempts=6, base_s=0.0, max_s=0.0, jitter=0.0)


def completion(text: str = "Once upon a time.", **message: Any) -> dict[str, Any]:
    usage = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    choice = {"index": 0, "message": {"role": "assistant", "content": text, **message}}
    return {"model": "m", "choices": [{**choice, "finish_reason": "stop"}], "usage": usage}


def engine_for(client: Any, **kwargs: Any) -> tuple[StoryEngine, list[RequestRecord]]:
    return make_engine("", client=client, retry=kwargs.pop("retry", NO_RETRY), **kwargs)


@pytest.mark.parametrize("typed", [False, True])
async def test_reasoning_models_get_max_completion_tokens_and_no_temperature(
    simulator_factory, typed
) -> None:
    # The simulator answers OpenAI's 400 to `max_tokens` or a temperature for o-series / gpt-5.
    url = simulator_factory(SimulatorConfig())
    async with ChatClient(base_url=url, api_key="k", typed=typed) as client:
        for model in ("o4-mini", "gpt-5-mini-2025-08-07", "openai/o3"):
            result = await client.chat(
                model=model, messages=MESSAGES, max_tokens=40, temperature=0.0
            )
            assert result.completion_tokens <= 40 and result.text
        chat = await client.chat(model="gpt-5-chat-latest", messages=MESSAGES, max_tokens=40)
        assert chat.text  # a chat model: max_tokens and temperature as usual
    async with httpx.AsyncClient(timeout=10) as http:
        stats = (await http.get(url.removesuffix("/v1") + "/v1/simulator/stats")).json()
    assert stats["counts"]["requests"] == 4  # known by name: no request was refused first


async def test_a_deployment_that_refuses_max_tokens_is_learned_once(fake_provider) -> None:
    # An Azure deployment named by its owner ("story-writer") in front of a reasoning model.
    def answer(path: str, headers: dict[str, str], body: dict[str, Any]) -> tuple[int, Any]:
        if "max_tokens" in body:
            error = {
                "message": "Unsupported parameter: 'max_tokens' is not supported with this "
                "model. Use 'max_completion_tokens' instead.",
                "type": "invalid_request_error",
                "param": "max_tokens",
                "code": "unsupported_parameter",
            }
            return 400, {"error": error}
        return 200, completion()

    url, seen = fake_provider(answer)
    async with ChatClient(base_url=url + "/openai/v1", api_key="k") as client:
        for _ in range(3):
            result = await client.chat(model="story-writer", messages=MESSAGES, max_tokens=64)
            assert result.text == "Once upon a time."
    bodies = [r["body"] for r in seen]
    assert len(bodies) == 4  # one refused request, then every request in the new form
    assert "max_tokens" in bodies[0] and "temperature" in bodies[0]
    for body in bodies[1:]:
        assert body["max_completion_tokens"] == 64
        assert "max_tokens" not in body and "temperature" not in body


@pytest.mark.parametrize("typed", [False, True])
async def test_azure_deployment_urls_keep_their_query_and_send_api_key(
    fake_provider, typed
) -> None:
    # A deployment URL behind a company gateway: Azure's form, on a host of its own.
    url, seen = fake_provider(lambda *_: (200, completion()))
    base = f"{url}/openai/deployments/gpt4o?api-version=2024-10-21"
    async with ChatClient(base_url=base, api_key="azure-key-123", typed=typed) as client:
        await client.chat(model="gpt4o", messages=MESSAGES, max_tokens=20)
    (request,) = seen
    assert request["path"] == "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"
    assert request["headers"]["api-key"] == "azure-key-123"


def test_azure_hosts_are_recognised() -> None:
    from generator.endpoint import Endpoint

    azure = Endpoint.parse("https://r.openai.azure.com/openai/deployments/d?api-version=2024-10-21")
    assert azure.azure and azure.query == {"api-version": "2024-10-21"}
    assert azure.url("/chat/completions") == (
        "https://r.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21"
    )
    assert azure.auth_headers("k") == {"Authorization": "Bearer k", "api-key": "k"}
    plain = Endpoint.parse("https://api.openai.com/v1/")
    assert not plain.azure and plain.url("/files") == "https://api.openai.com/v1/files"


async def test_a_refusal_is_a_content_filter_error_with_the_models_words(fake_provider) -> None:
    said = "I'm sorry, but I can't help with that."
    url, _ = fake_provider(lambda *_: (200, completion(text=None, refusal=said)))  # type: ignore[arg-type]
    async with ChatClient(base_url=url, api_key="k") as client:
        with pytest.raises(ProviderError) as refused:
            await client.chat(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    assert refused.value.error_class == "content_filter" and not refused.value.retryable
    assert said in refused.value.message and refused.value.prompt_tokens == 12


async def test_an_answer_without_usage_is_charged_an_estimate(simulator) -> None:
    engine, records = engine_for(ChatClient(base_url=simulator, api_key="k", provider="sim"))
    try:
        result = await engine.chat(
            "story",
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_tokens=400,
            extra_headers={"x-simulator-fault": "no_usage"},
        )
    finally:
        await engine.client.aclose()
    (record,) = records
    assert record.outcome == "ok" and "no usage" in (record.error or "")
    assert record.prompt_tokens > 5 and record.completion_tokens >= len(result.text) // 4
    assert record.cost_usd == pytest.approx(
        PriceTable.load().cost("gpt-4o-mini", record.prompt_tokens, record.completion_tokens)
    )
    assert record.cost_usd > 0 and result.completion_tokens == record.completion_tokens


@pytest.mark.parametrize("fault", ["gateway_timeout", "timeout"])
async def test_timeouts_are_charged_at_their_worst_case(simulator_factory, fault) -> None:
    # A gateway's 504, and the engine's own deadline (the client's 0.5 s before any answer).
    url = simulator_factory(SimulatorConfig(timeout_hang_s=5.0))
    client = ChatClient(base_url=url, api_key="k", provider="sim", timeout_s=0.5)
    engine, records = engine_for(client)
    with pytest.raises(ProviderError) as failed:
        await engine.chat(
            "story",
            model="gpt-4o-mini",
            messages=MESSAGES,
            max_tokens=500,
            extra_headers={"x-simulator-fault": fault},
        )
    await client.aclose()
    assert failed.value.maybe_billed
    (record,) = records
    worst = PriceTable.load().cost("gpt-4o-mini", 0, 500)
    assert record.outcome == "error" and record.cost_usd > worst
    assert "worst case" in (record.error or "")


async def test_an_empty_account_is_not_retried(simulator) -> None:
    engine, records = engine_for(
        ChatClient(base_url=simulator, api_key="k", provider="sim"), retry=FAST
    )
    with pytest.raises(ProviderError) as empty:
        await engine.chat(
            "story",
            model="gpt-4o-mini",
            messages=MESSAGES,
            extra_headers={"x-simulator-fault": "insufficient_quota"},
        )
    await engine.client.aclose()
    assert empty.value.error_class == "quota" and empty.value.status == 429
    assert not empty.value.retryable and len(records) == 1


async def test_a_member_that_hangs_is_taken_out_of_the_pool(simulator_factory) -> None:
    hangs = simulator_factory(SimulatorConfig(rate_timeout=1.0, timeout_hang_s=10.0))
    healthy = simulator_factory(SimulatorConfig())
    pool = ProviderPool(
        "simulator-story-1",
        [MemberConfig("hangs", hangs, weight=50), MemberConfig("healthy", healthy)],
        policy=BreakerPolicy(failures=2, cooldown_s=600),
        rng=random.Random(3),
    )
    # The engine's adaptive deadline (0.5 s until answers are in) cuts the hanging calls.
    controller = AdaptiveController(AdaptiveConfig(min_timeout_s=0.5), initial_timeout_s=0.5)
    engine, _ = engine_for(ProviderPools([pool]), retry=FAST, adaptive=controller)
    try:
        for _ in range(4):
            outcome = await engine.story(
                Recipe("jump", "ball", "red", ()), model="simulator-story-1"
            )
            assert outcome.error is None and outcome.provider == "healthy"
    finally:
        await pool.aclose()
    rows = {row["name"]: row for row in pool.snapshot()["members"]}
    assert rows["hangs"]["state"] == OPEN and rows["hangs"]["errors"] == 2
    assert rows["hangs"]["last_error"].startswith("timeout")
    assert rows["healthy"]["state"] == CLOSED


async def test_a_members_own_timeout_holds(simulator_factory) -> None:
    hangs = simulator_factory(SimulatorConfig(rate_timeout=1.0, timeout_hang_s=10.0))
    pool = ProviderPool(
        "simulator-story-1", [MemberConfig("hangs", hangs, timeout_s=0.3)], policy=BreakerPolicy()
    )
    # The engine's deadline (60 s until answers are in) and its transport backstop are longer.
    adaptive = AdaptiveController(AdaptiveConfig(), initial_timeout_s=60.0)
    engine, records = engine_for(ProviderPools([pool]), adaptive=adaptive)
    try:
        with pytest.raises(ProviderError) as timed_out:
            await engine.chat("story", model="simulator-story-1", messages=MESSAGES)
    finally:
        await pool.aclose()
    assert timed_out.value.error_class == "timeout" and records[0].latency_s < 3


def test_a_daily_request_limit_is_not_taken_for_a_per_minute_one() -> None:
    from generator.limit_headers import minute_limit

    groq = {  # Groq: requests per day, tokens per minute
        "x-ratelimit-limit-requests": "14400",
        "x-ratelimit-remaining-requests": "14399",
        "x-ratelimit-reset-requests": "6s",
        "x-ratelimit-limit-tokens": "6000",
        "x-ratelimit-remaining-tokens": "5900",
        "x-ratelimit-reset-tokens": "1s",
    }
    assert minute_limit(groq, "requests") is None and minute_limit(groq, "tokens") == 6000
    # A full daily bucket (nothing used yet) whose reset is hours away.
    fresh = {**groq, "x-ratelimit-remaining-requests": "14400", "x-ratelimit-reset-requests": "2h"}
    assert minute_limit(fresh, "requests") is None
    openai_headers = {
        "x-ratelimit-limit-requests": "5000",
        "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-reset-requests": "12ms",
    }
    assert minute_limit(openai_headers, "requests") == 5000
    controller = AdaptiveController(AdaptiveConfig(), initial_timeout_s=10.0)
    state = controller.state("llama-3.1-8b-instant")
    state._learn_limits(groq)
    assert state.rpm is None and state.tpm == 6000


async def test_requests_go_through_the_configured_proxy(fake_provider, monkeypatch) -> None:
    # The proxy answers for the provider, as a corporate proxy forwards to it.
    proxy, seen = fake_provider(lambda *_: (200, completion()))
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("http_proxy", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with ChatClient(base_url="http://provider.invalid/v1", api_key="k") as client:
        result = await client.chat(model="gpt-4o-mini", messages=MESSAGES, max_tokens=20)
    assert result.text == "Once upon a time."
    assert seen[0]["path"] == "http://provider.invalid/v1/chat/completions"


async def test_a_configured_key_is_redacted_whatever_the_message_wraps_it_in(
    fake_provider,
) -> None:
    key = "local-secret-ABC"
    error = {"message": f"The key {key} is not valid for this server", "type": "auth"}
    url, _ = fake_provider(lambda *_: (401, {"error": error}))
    async with ChatClient(base_url=url, api_key=key) as client:
        with pytest.raises(ProviderError) as refused:
            await client.chat(model="gpt-4o-mini", messages=MESSAGES)
    assert key not in str(refused.value) and "[redacted]" in refused.value.message
    assert key not in redact(f"key {key} invalid; token gsk_abcdefghijklmnopqrstuvwx")
    assert "gsk_abcdefghijklmnopqrstuvwx" not in redact("token gsk_abcdefghijklmnopqrstuvwx")
    # A local server's placeholder key is no secret: host names with it stay readable.
    ChatClient(base_url="http://lmstudio:1234/v1", api_key="lmstudio")
    assert redact("connection to http://lmstudio:1234/v1 failed") == (
        "connection to http://lmstudio:1234/v1 failed"
    )
