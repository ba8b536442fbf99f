"""ChatClient against the live simulator over real HTTP."""

from __future__ import annotations

import socket

import openai
import pytest

from generator.client import ChatClient, ClientConfig
from generator.errors import ProviderError, parse_retry_after
from generator.simulator import SimulatorConfig

STORY_PROMPT = (
    "Write a short story (3-5 paragraphs) which only uses very simple words that a 3 year old "
    'child would understand. The story should use the verb "hang", the noun "foot" and the '
    'adjective "cute". The story has the following features: the story should contain at least '
    "one dialogue. Remember to only use simple words!\n\nPossible story:"
)
MESSAGES = [{"role": "user", "content": STORY_PROMPT}]


async def test_success_records_usage_latency_and_headers(simulator_factory) -> None:
    url = simulator_factory(SimulatorConfig(rpm=6000, tpm=1_000_000))
    async with ChatClient(base_url=url, api_key="k", provider="simulator") as client:
        result = await client.chat(model="simulator-story-1", messages=MESSAGES, max_tokens=800)
    assert result.model == "simulator-story-1 (simulator)"
    assert result.provider == "simulator"
    assert result.finish_reason == "stop"
    assert "foot" in result.text and "cute" in result.text and '"' in result.text
    assert result.prompt_tokens > 50 and result.completion_tokens > 80
    assert 0 < result.latency_s < 5
    assert result.headers["x-ratelimit-limit-requests"] == "6000"
    assert result.headers["x-ratelimit-limit-tokens"] == "1000000"
    assert int(result.headers["x-ratelimit-remaining-requests"]) < 200
    assert result.headers["x-ratelimit-reset-tokens"].endswith("s")


@pytest.mark.parametrize(
    ("fault", "error_class", "retryable", "status"),
    [
        ("rate_limit", "rate_limit", True, 429),
        ("server_error", "server_error", True, 500),
        ("unavailable", "server_error", True, 503),
        ("bad_request", "bad_request", False, 400),
        ("auth", "auth", False, 401),
        ("permission", "permission", False, 403),
        ("not_found", "not_found", False, 404),
        ("content_filter", "content_filter", False, 200),
        ("content_filter_400", "content_filter", False, 400),
        ("malformed", "malformed_response", True, 200),
        ("no_choices", "malformed_response", True, 200),
    ],
)
async def test_error_classes(simulator, fault, error_class, retryable, status) -> None:
    async with ChatClient(base_url=simulator, api_key="k") as client:
        with pytest.raises(ProviderError) as info:
            await client.chat(
                model="simulator-story-1",
                messages=MESSAGES,
                extra_headers={"x-simulator-fault": fault},
            )
    err = info.value
    assert (err.error_class, err.retryable, err.status) == (error_class, retryable, status)
    assert err.message


async def test_rate_limit_carries_retry_after(simulator) -> None:
    async with ChatClient(base_url=simulator, api_key="k") as client:
        with pytest.raises(ProviderError) as info:
            await client.chat(
                model="m", messages=MESSAGES, extra_headers={"x-simulator-fault": "rate_limit"}
            )
    assert info.value.retry_after == pytest.approx(0.2)
    assert info.value.headers["retry-after"] == "1"


async def test_malformed_messages_are_clear(simulator) -> None:
    async with ChatClient(base_url=simulator, api_key="k") as client:
        for fault, words in (("malformed", "is not JSON"), ("no_choices", "has no choices")):
            with pytest.raises(ProviderError) as info:
                await client.chat(
                    model="m", messages=MESSAGES, extra_headers={"x-simulator-fault": fault}
                )
            assert words in info.value.message
    # A billed answer without choices still reports its usage (cost is computed from it).
    assert info.value.prompt_tokens > 0


async def test_truncated_output_is_length(simulator) -> None:
    async with ChatClient(base_url=simulator, api_key="k") as client:
        result = await client.chat(model="m", messages=MESSAGES, max_tokens=20)
    assert result.finish_reason == "length"
    assert result.completion_tokens == 20


async def test_timeout_is_retryable(simulator_factory) -> None:
    url = simulator_factory(SimulatorConfig(rate_timeout=1.0, timeout_hang_s=3.0))
    async with ChatClient(base_url=url, api_key="k", timeout_s=0.3) as client:
        with pytest.raises(ProviderError) as info:
            await client.chat(model="m", messages=MESSAGES)
    assert info.value.error_class == "timeout" and info.value.retryable
    assert 0.25 < info.value.latency_s < 2.5


async def test_connection_refused_is_retryable() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    async with ChatClient(base_url=f"http://127.0.0.1:{port}/v1", api_key="k") as client:
        with pytest.raises(ProviderError) as info:
            await client.chat(model="m", messages=MESSAGES)
    assert info.value.error_class == "connection" and info.value.retryable


async def test_wrong_api_key_is_auth(simulator_factory) -> None:
    url = simulator_factory(SimulatorConfig(api_key="right"))
    async with ChatClient(base_url=url, api_key="wrong") as client:
        with pytest.raises(ProviderError) as info:
            await client.chat(model="m", messages=MESSAGES)
    assert (info.value.error_class, info.value.retryable) == ("auth", False)
    assert "wrong" not in str(info.value)
    async with ChatClient(base_url=url, api_key="right") as client:
        assert (await client.chat(model="m", messages=MESSAGES)).text


async def test_official_sdk_works_unmodified(simulator) -> None:
    sdk = openai.AsyncOpenAI(base_url=simulator, api_key="k", max_retries=0)
    completion = await sdk.chat.completions.create(model="simulator-story-1", messages=MESSAGES)
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.total_tokens > 0
    models = await sdk.models.list()
    entries = {m.id: m.owned_by for m in models.data}
    assert "simulator-story-1" in entries
    assert all("simulator" in owner for owner in entries.values())
    await sdk.close()


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({}) is None


def test_config_from_env_and_provider(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://vllm.local:8000/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    config = ClientConfig.from_env()
    assert config.base_url == "http://vllm.local:8000/v1" and config.api_key == "sk-test"
    assert config.provider_name == "vllm.local"
    assert ClientConfig.from_env(base_url="https://api.openai.com/v1").provider_name == "openai"
    assert "sk-test" not in repr(config)


async def test_typed_sdk_path_gives_the_same_results(simulator) -> None:
    async with ChatClient(base_url=simulator, api_key="k", typed=True) as client:
        result = await client.chat(model="simulator-story-1", messages=MESSAGES)
        assert result.text and result.finish_reason == "stop" and result.completion_tokens > 0
        for fault, error_class in (
            ("rate_limit", "rate_limit"),
            ("malformed", "malformed_response"),
        ):
            with pytest.raises(ProviderError) as info:
                await client.chat(
                    model="m", messages=MESSAGES, extra_headers={"x-simulator-fault": fault}
                )
            assert info.value.error_class == error_class
