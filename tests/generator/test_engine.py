"""StoryEngine end to end against the simulator: limiter + client + retries + pricing + checks."""

from __future__ import annotations

import pytest

from generator.checks import StoryChecker
from generator.client import ChatClient
from generator.engine import BudgetExhausted, RequestRecord, StoryEngine
from generator.errors import ProviderError
from generator.pricing import PriceTable
from generator.ratelimit import LocalRateLimiter
from generator.retry import RetryPolicy
from generator.simulator import SimulatorConfig
from vocab import Recipe, RecipeSampler

FAST_RETRY = RetryPolicy(max_attempts=4, base_s=0.01, max_s=0.05, jitter=0.01)
MODEL = "simulator-story-1"


def make_engine(url: str, **kwargs) -> tuple[StoryEngine, list[RequestRecord]]:
    seen: list[RequestRecord] = []

    async def on_request(record: RequestRecord) -> None:
        seen.append(record)

    client = kwargs.pop("client", None)  # another client (a pool, other timeouts) than url's
    engine = StoryEngine(
        client=client or ChatClient(base_url=url, api_key="k", provider="simulator", timeout_s=5),
        limiter=LocalRateLimiter(),
        pricing=PriceTable.load(),
        retry=kwargs.pop("retry", FAST_RETRY),
        checker=StoryChecker(),
        on_request=on_request,
        **kwargs,
    )
    return engine, seen


async def test_story_end_to_end(simulator) -> None:
    engine, seen = make_engine(simulator)
    recipe = Recipe(verb="hang", noun="foot", adjective="cute", features=("Dialogue", "MoralValue"))
    outcome = await engine.story(recipe, model=MODEL)
    await engine.client.aclose()
    assert outcome.error is None and outcome.accepted, outcome.checks
    assert "The moral of the story is" in outcome.text and '"' in outcome.text
    assert outcome.prompt.endswith("Possible story:")
    assert outcome.provider == "simulator" and outcome.response_model.endswith("(simulator)")
    expected = PriceTable.load().cost(MODEL, outcome.prompt_tokens, outcome.completion_tokens)
    assert outcome.cost_usd == pytest.approx(expected) and expected > 0
    assert [r.outcome for r in seen] == ["ok"] and seen == outcome.requests
    row = outcome.to_dict()
    assert row["recipe"]["features"] == ["Dialogue", "MoralValue"]
    assert row["usage"]["completion_tokens"] == outcome.completion_tokens and row["accepted"]


async def test_retries_then_success_record_every_attempt(simulator_factory) -> None:
    url = simulator_factory(SimulatorConfig(rate_500=0.5, seed=3))
    engine, seen = make_engine(url, retry=RetryPolicy(max_attempts=8, base_s=0.0, jitter=0.0))
    sampler = RecipeSampler()
    outcomes = [await engine.story(sampler.recipe(1, i), model=MODEL) for i in range(8)]
    await engine.client.aclose()
    assert all(o.error is None for o in outcomes)
    errors = [r for r in seen if r.outcome == "error"]
    assert errors and all(r.error_class == "server_error" and r.status == 500 for r in errors)
    assert len(seen) == sum(len(o.requests) for o in outcomes)
    retried = next(o for o in outcomes if len(o.requests) > 1)
    assert [r.attempt for r in retried.requests] == list(range(1, len(retried.requests) + 1))


async def test_exhausted_is_a_recorded_failure_not_an_empty_story(simulator_factory) -> None:
    url = simulator_factory(SimulatorConfig(rate_503=1.0))
    engine, seen = make_engine(url)
    outcome = await engine.story(Recipe("run", "dog", "big", ()), model=MODEL)
    await engine.client.aclose()
    assert outcome.text is None and not outcome.accepted
    assert outcome.error_class == "server_error" and "4 attempt(s)" in outcome.error
    assert len(outcome.requests) == 4 and len(seen) == 4
    assert outcome.to_dict()["error_class"] == "server_error"


async def test_billed_failure_is_costed(simulator_factory) -> None:
    url = simulator_factory(SimulatorConfig(rate_no_choices=1.0))
    engine, _ = make_engine(url, retry=RetryPolicy(max_attempts=2, base_s=0.0, jitter=0.0))
    outcome = await engine.story(Recipe("run", "dog", "big", ()), model=MODEL)
    await engine.client.aclose()
    assert outcome.error_class == "malformed_response"
    assert all(r.cost_usd > 0 and r.prompt_tokens > 0 for r in outcome.requests)
    assert outcome.cost_usd == pytest.approx(sum(r.cost_usd for r in outcome.requests))


async def test_truncated_story_is_rejected_by_check(simulator) -> None:
    engine, _ = make_engine(simulator)
    outcome = await engine.story(Recipe("run", "dog", "big", ()), model=MODEL, max_tokens=30)
    await engine.client.aclose()
    assert outcome.error is None and outcome.finish_reason == "length"
    assert "truncated" in outcome.checks.rejections and not outcome.accepted


async def test_summary_and_judge_chat(simulator) -> None:
    engine, seen = make_engine(simulator)
    story = "Lily found a red ball in the park. She played with it all day. Lily was happy."
    summary, records = await engine.summary(story, model=MODEL)
    assert summary and "Lily" in summary and len(records) == 1 and records[0].kind == "summary"
    turn1 = (
        "The symbol *** marks the separator between the prescribed beginning and the student's "
        "completion:\n\nTom had a dog.***The dog liked to run. They played in the park.\n\n"
        "Please provide your general assessment."
    )
    messages = [{"role": "user", "content": turn1}]
    first = await engine.chat("judge", model="simulator-judge-1", messages=messages)
    messages += [
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "Now, grade the student's completion in terms of grammar."},
    ]
    second = await engine.chat("judge", model="simulator-judge-1", messages=messages)
    await engine.client.aclose()
    assert second.text.startswith("Grammar: ") and "Age group: " in second.text
    assert [r.kind for r in seen] == ["summary", "judge", "judge"]


async def test_chat_raises_when_exhausted(simulator_factory) -> None:
    url = simulator_factory(SimulatorConfig(rate_500=1.0))
    engine, _ = make_engine(url, retry=RetryPolicy(max_attempts=2, base_s=0.0, jitter=0.0))
    records: list[RequestRecord] = []
    with pytest.raises(ProviderError):
        await engine.chat(
            "judge", model=MODEL, messages=[{"role": "user", "content": "hi"}], records=records
        )
    await engine.client.aclose()
    assert len(records) == 2


class CapGuard:
    def __init__(self, cap: float) -> None:
        self.cap, self.spent, self.reserved = cap, 0.0, 0.0

    async def reserve(self, usd: float) -> object:
        if self.spent + self.reserved + usd > self.cap:
            raise BudgetExhausted(f"cap {self.cap} reached")
        self.reserved += usd
        return usd

    async def settle(self, token: object, actual_usd: float) -> None:
        self.reserved -= float(token)
        self.spent += actual_usd


async def test_budget_guard_reserves_settles_and_stops(simulator) -> None:
    guard = CapGuard(cap=0.0006)
    engine, _ = make_engine(simulator, budget=guard)
    recipe = Recipe("run", "dog", "big", ())
    first = await engine.story(recipe, model=MODEL, max_tokens=1024)
    assert first.error is None and guard.spent == pytest.approx(first.cost_usd)
    assert guard.reserved == pytest.approx(0.0)
    with pytest.raises(BudgetExhausted):
        for _ in range(50):
            await engine.story(recipe, model=MODEL, max_tokens=1024)
    await engine.client.aclose()
    assert guard.spent <= guard.cap


async def test_story_reservation_is_what_the_first_attempt_reserves(simulator) -> None:
    class Recording(CapGuard):
        def __init__(self) -> None:
            super().__init__(cap=1.0)
            self.asked: list[float] = []

        async def reserve(self, usd: float) -> object:
            self.asked.append(usd)
            return await super().reserve(usd)

    guard = Recording()
    engine, _ = make_engine(simulator, budget=guard)
    recipe = Recipe("hang", "foot", "cute", ("Dialogue",))
    ahead = engine.story_reservation(recipe, model=MODEL, max_tokens=300)
    outcome = await engine.story(recipe, model=MODEL, max_tokens=300)
    await engine.client.aclose()
    assert outcome.error is None
    # Exactly equal: a worker that reserved `ahead` at claim time needs no further round trip.
    assert guard.asked == [ahead] and ahead > outcome.cost_usd > 0
