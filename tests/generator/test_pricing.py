"""Pricing table: packaged prices, overrides, snapshots, unknown models."""

import json

import pytest

from generator.pricing import (
    LOCAL_MODELS_ENV,
    PRICING_ENV,
    PriceTable,
    PricingError,
    UnknownModelPrice,
    no_price_message,
)


@pytest.fixture
def table(monkeypatch):
    monkeypatch.delenv(PRICING_ENV, raising=False)
    monkeypatch.delenv(LOCAL_MODELS_ENV, raising=False)
    return PriceTable.load()


def test_list_prices(table):
    # gpt-4o: $2.50 in / $10 out per million tokens.
    assert table.cost("gpt-4o", 1_000_000, 0) == pytest.approx(2.5)
    assert table.cost("gpt-4o", 1200, 350) == pytest.approx((1200 * 2.5 + 350 * 10) / 1e6)
    assert table.cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert table.cost("gpt-4.1-nano", 2_000_000, 1_000_000) == pytest.approx(0.6)
    assert table.cost("gpt-3.5-turbo", 1000, 1000) == pytest.approx(0.002)
    assert table.cost("gpt-4", 100, 200) == pytest.approx((100 * 30 + 200 * 60) / 1e6)


def test_batch_discount(table):
    assert table.cost("gpt-4.1", 1_000_000, 1_000_000, batch=True) == pytest.approx(5.0)
    assert table.cost("gpt-4.1", 1_000_000, 1_000_000) == pytest.approx(10.0)


def test_snapshots_resolve_to_base_price(table):
    assert table.cost("gpt-4o-2024-08-06", 1_000_000, 0) == pytest.approx(2.5)
    assert table.cost("gpt-4o-mini-2024-07-18", 1_000_000, 0) == pytest.approx(0.15)
    assert table.cost("gpt-3.5-turbo-0125", 1_000_000, 0) == pytest.approx(0.5)
    assert table.cost("openai/gpt-4.1-mini", 1_000_000, 0) == pytest.approx(0.4)
    # A snapshot priced on its own keeps its own price.
    assert table.cost("gpt-4o-2024-05-13", 1_000_000, 0) == pytest.approx(5.0)


def test_simulator_models_cost_a_nominal_price(table):
    assert table.has("simulator-story-1")
    assert table.cost("simulator-story-1", 1_000_000, 1_000_000) == pytest.approx(0.3)
    assert 0 < table.cost("simulator-judge", 500, 200) < 0.001


def test_unknown_model_names_model_and_how_to_add(table):
    assert not table.has("llama-3-8b")
    with pytest.raises(UnknownModelPrice) as caught:
        table.cost("llama-3-8b", 10, 10)
    message = str(caught.value)
    assert "'llama-3-8b'" in message
    assert "models: {llama-3-8b: {input: USD_PER_1M, output: USD_PER_1M}}" in message
    assert PRICING_ENV in message
    assert caught.value.model == "llama-3-8b"


def test_override_file_and_env(tmp_path, monkeypatch):
    path = tmp_path / "prices.yaml"
    path.write_text(
        "batch_discount: 0.25\nmodels:\n  llama-3-8b: {input: 0.05, output: 0.08}\n"
        "  gpt-4o: {input: 2.0, output: 8.0}\n  simulator-*: {input: 0, output: 0}\n"
    )
    table = PriceTable.load(path)
    assert table.cost("llama-3-8b", 1_000_000, 1_000_000) == pytest.approx(0.13)
    assert table.cost("gpt-4o", 1_000_000, 0) == pytest.approx(2.0)
    assert table.cost("gpt-4o-mini", 1_000_000, 0) == pytest.approx(0.15)  # default kept
    assert table.cost("gpt-4o", 1_000_000, 0, batch=True) == pytest.approx(1.5)
    assert table.cost("simulator-story-1", 1000, 1000) == 0.0
    json_path = tmp_path / "prices.json"
    json_path.write_text(json.dumps({"models": {"my-model": {"input": 1, "output": 2}}}))
    monkeypatch.setenv(PRICING_ENV, str(json_path))
    assert PriceTable.load().cost("my-model", 1_000_000, 1_000_000) == pytest.approx(3.0)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("models:\n  m: {input: -1, output: 2}\n", "model 'm' input price must be a number >= 0"),
        ("models:\n  m: {input: 1}\n", "model 'm' needs `input` and `output`, optionally"),
        ("models:\n  m: {input: 1, output: 1, cache: 0}\n", "model 'm' needs `input` and"),
        ("prices: {}\n", "unknown key(s) prices"),
        ("batch_discount: 1.5\n", "batch_discount must be in [0, 1)"),
        ("models: [a, b\n", "invalid YAML"),
    ],
)
def test_bad_override_file(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(PricingError) as caught:
        PriceTable.load(path)
    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


def test_missing_override_file(tmp_path):
    with pytest.raises(PricingError, match="file not found"):
        PriceTable.load(tmp_path / "nope.yaml")


def test_negative_tokens_rejected(table):
    with pytest.raises(ValueError, match="token counts must be >= 0"):
        table.cost("gpt-4o", -1, 0)


def test_local_models_from_the_environment_cost_nothing(monkeypatch):
    monkeypatch.delenv(PRICING_ENV, raising=False)
    monkeypatch.setenv(LOCAL_MODELS_ENV, "llama-3-8b, qwen2.5-*")
    table = PriceTable.load()
    assert table.has("llama-3-8b") and table.has("qwen2.5-7b-instruct")
    assert table.cost("llama-3-8b", 5_000_000, 5_000_000) == 0.0
    assert table.cost("qwen2.5-7b-instruct", 1000, 1000) == 0.0
    assert table.cost("gpt-4o", 1_000_000, 0) == pytest.approx(2.5)  # others keep their price
    # An explicit argument wins over the environment ("" declares none).
    assert not PriceTable.load(local_models="").has("llama-3-8b")


def test_with_prices_adds_and_overrides_keeping_the_batch_discount(table):
    priced = table.with_prices(
        {"my-llama": {"input": 0.2, "output": 0.4}, "gpt-4o": {"input": 1.0, "output": 2.0}}
    )
    assert priced.has("my-llama") and priced.has("MY-LLAMA")
    assert priced.cost("my-llama", 1_000_000, 1_000_000) == pytest.approx(0.6)
    assert priced.cost("my-llama", 1_000_000, 1_000_000, batch=True) == pytest.approx(0.3)
    assert priced.cost("gpt-4o", 1_000_000, 1_000_000) == pytest.approx(3.0)
    assert priced.cost("gpt-4o-mini", 1_000_000, 0) == pytest.approx(0.15)
    assert priced.cost("simulator-story-1", 1_000_000, 1_000_000) == pytest.approx(0.3)
    # The original table is unchanged.
    assert not table.has("my-llama") and table.cost("gpt-4o", 1_000_000, 0) == pytest.approx(2.5)
    local = table.with_prices({"my-llama": {"input": 0, "output": 0}})
    assert local.cost("my-llama", 10**6, 10**6) == 0.0


@pytest.mark.parametrize(
    ("prices", "problem"),
    [
        ({"m": {"input": -1, "output": 0}}, "model 'm' input price must be a number >= 0"),
        ({"m": {"input": 1}}, "model 'm' needs `input` and `output`, optionally"),
    ],
)
def test_with_prices_rejects_bad_prices(table, prices, problem):
    with pytest.raises(PricingError, match=problem):
        table.with_prices(prices)


def test_no_price_message_is_one_line_with_the_cli_way_first():
    message = no_price_message("llama-3-8b", "--price-input 0 --price-output 0")
    assert "\n" not in message
    assert message.startswith("no price for model 'llama-3-8b': pass --price-input 0 ")
    assert f"{LOCAL_MODELS_ENV}=llama-3-8b" in message and PRICING_ENV in message


def test_cached_prompt_tokens_cost_the_cached_input_price(table):
    # gpt-4o: $2.50 a million input tokens, $1.25 a million of them served from the cache.
    assert table.cost("gpt-4o", 1_000_000, 0, cached_tokens=1_000_000) == pytest.approx(1.25)
    assert table.cost("gpt-4o", 2048, 100, cached_tokens=1024) == pytest.approx(
        (1024 * 2.5 + 1024 * 1.25 + 100 * 10) / 1e6
    )
    assert table.cost("gpt-5-nano", 10**6, 0, cached_tokens=10**6) == pytest.approx(0.005)
    assert table.cost("gpt-4o-2024-08-06", 10**6, 0, cached_tokens=10**6) == pytest.approx(1.25)
    # A snapshot without a caching discount, and an older model: cached costs the input price.
    assert table.cost("gpt-4o-2024-05-13", 10**6, 0, cached_tokens=10**6) == pytest.approx(5.0)
    assert table.cost("gpt-4-turbo", 10**6, 0, cached_tokens=10**6) == pytest.approx(10.0)
    # Never more cached than prompt; the batch discount applies on top.
    assert table.cost("gpt-4o", 100, 0, cached_tokens=500) == pytest.approx(100 * 1.25 / 1e6)
    assert table.cost("gpt-4.1", 10**6, 0, batch=True, cached_tokens=10**6) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="cached=-1"):
        table.cost("gpt-4o", 10, 0, cached_tokens=-1)


def test_a_cached_input_price_above_the_input_price_is_refused(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text("models:\n  my-model: {input: 0.5, cached_input: 5, output: 1}\n")
    with pytest.raises(PricingError) as caught:
        PriceTable.load(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert "model 'my-model' cached_input price 5 is above its input price 0.5" in message


def test_an_entry_without_cached_input_bills_cached_tokens_at_its_input_price(tmp_path):
    path = tmp_path / "prices.yaml"
    path.write_text(
        "models:\n  gpt-4o: {input: 2.0, output: 8.0}\n"
        "  my-model: {input: 1.0, cached_input: 0.1, output: 2.0}\n"
    )
    table = PriceTable.load(path, local_models="free-*")
    assert table.cost("gpt-4o", 10**6, 0, cached_tokens=10**6) == pytest.approx(2.0)
    assert table.cost("my-model", 10**6, 0, cached_tokens=10**6) == pytest.approx(0.1)
    assert table.cost("free-llama", 10**6, 10**6, cached_tokens=10**6) == 0.0
    priced = table.with_prices({"gpt-4o-mini": {"input": 1.0, "output": 2.0}})
    assert priced.cost("gpt-4o-mini", 10**6, 0, cached_tokens=10**6) == pytest.approx(1.0)
    with pytest.raises(PricingError, match="cached_input price 3 is above its input price 1"):
        table.with_prices({"m": {"input": 1, "cached_input": 3, "output": 1}})
