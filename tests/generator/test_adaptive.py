"""Adaptive concurrency (AIMD on s/token and errors) and timeouts learned from answers."""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from generator.adaptive import AdaptiveConfig, AdaptiveController, ModelState, Slot
from generator.checks import StoryChecker
from generator.client import ClientConfig
from generator.errors import ProviderError
from generator.generate import generate_stories
from generator.pricing import PriceTable
from generator.ratelimit import ModelLimits
from generator.retry import RetryPolicy
from generator.simulator import SimulatorConfig
from vocab import RecipeSampler

MODEL = "simulator-story-1"


def state(limits: ModelLimits | None = None, **config: object) -> ModelState:
    settings = {"max_concurrency": 32, "min_queue_delay_s": 0.5, **config}
    return ModelState(AdaptiveConfig(**settings), limits, initial_timeout_s=60.0)  # type: ignore[arg-type]


def one(s: ModelState, seconds: float, tokens: int = 200, error: str | None = None) -> None:
    """One answer (or failure) to a request sent under the current limit."""
    s.learn(
        Slot(MODEL, s.epoch, 1024), latency_s=seconds, completion_tokens=tokens, error_class=error
    )


def answer_round(s: ModelState, *, seconds: float, tokens: int = 200, n: int | None = None) -> None:
    """A full round: `n` answers (the round size by default) to requests sent under this limit."""
    s.epoch_peak = s.allowed()  # the round used the whole limit
    for _ in range(n or min(s.config.round_answers, max(4, s.allowed() // 2))):
        s.learn(
            Slot(MODEL, s.epoch, 1024),
            latency_s=seconds,
            completion_tokens=tokens,
            error_class=None,
        )


def test_healthy_rounds_add_one_and_only_when_the_limit_was_used() -> None:
    s = state()
    s.limit = 8.0
    answer_round(s, seconds=10.0)
    answer_round(s, seconds=10.5)
    answer_round(s, seconds=9.5)
    assert s.limit == 11.0 and s.cuts == 0
    s.epoch_peak = 3  # only 3 of 11 were ever in flight: no reason to grow
    for _ in range(10):
        one(s, 10.0)
    assert s.limit == 11.0


def test_latency_growth_cuts_in_proportion_then_stops_cutting() -> None:
    s = state()
    s.limit = 16.0
    answer_round(s, seconds=10.0)  # the baseline: 0.05 s/token
    assert s.limit == 17.0
    answer_round(s, seconds=40.0)  # 4x the baseline: a queue; the cut is at most x0.5
    assert s.limit == 8.5 and s.cuts == 1
    answer_round(s, seconds=25.0)  # 2.5x: cut by 2 / 2.5
    assert s.limit == pytest.approx(8.5 * 2.0 / 2.5)
    before = s.limit
    answer_round(s, seconds=15.0)  # 1.5x is within the tolerance: healthy again
    assert s.limit == before + 1 and s.cuts == 2


def test_a_first_wave_sent_into_a_queue_is_cut_in_its_first_round() -> None:
    # 16 requests at once to a server generating 2 at a time, 10 s each: answers come in pairs.
    s = state()
    s.limit = 16.0
    s.epoch_peak = 16
    for position in range(8):
        one(s, 10.0 * (position // 2 + 1))
    assert s.limit == pytest.approx(16 * 2 / 2.5) and s.cuts == 1  # median 25 s vs 10 s


def test_small_absolute_growth_is_noise_not_a_queue() -> None:
    s = state(min_queue_delay_s=2.0)
    s.limit = 16.0
    answer_round(s, seconds=0.2)
    answer_round(s, seconds=1.0)  # 5x, but 0.8 s more per answer: no queue worth cutting for
    assert s.limit == 18.0 and s.cuts == 0


@pytest.mark.parametrize("error_class", ["timeout", "server_error", "connection", "rate_limit"])
def test_overload_errors_halve_once_per_limit(error_class: str) -> None:
    s = state()
    s.limit = 20.0
    sent_before = [Slot(MODEL, s.epoch, 1024) for _ in range(5)]
    for slot in sent_before:
        s.learn(slot, latency_s=60.0, completion_tokens=0, error_class=error_class)
    assert s.limit == 10.0  # the rest were sent before the cut took effect
    s.learn(
        Slot(MODEL, s.epoch, 1024), latency_s=60.0, completion_tokens=0, error_class=error_class
    )
    assert s.limit == 5.0


def test_errors_that_are_not_overload_leave_the_limit() -> None:
    s = state()
    s.limit = 20.0
    for error_class in ("bad_request", "content_filter", "malformed_response"):
        s.learn(
            Slot(MODEL, s.epoch, 1024), latency_s=1.0, completion_tokens=0, error_class=error_class
        )
    assert s.limit == 20.0


def test_never_below_one() -> None:
    s = state()
    for _ in range(20):
        s.learn(
            Slot(MODEL, s.epoch, 1024), latency_s=1.0, completion_tokens=0, error_class="timeout"
        )
    assert s.limit == 1.0 and s.allowed() == 1
    answer_round(s, seconds=1.0, n=4)
    answer_round(s, seconds=30.0, n=4)  # a queue even at 1 in flight: still 1
    assert s.allowed() == 1


def test_never_above_what_the_rate_limits_admit() -> None:
    # 60 RPM = 1 request/s at 2 s per answer: more than 1 x 2 x 2 = 4 in flight cannot help.
    s = state(ModelLimits(rpm=60), history=16)
    answer_round(s, seconds=2.0, n=15)
    assert s.allowed() == 32  # not from a partial history: the first answers are the fast ones
    answer_round(s, seconds=2.0, n=1)
    assert s.bound() == 4 and s.allowed() == 4
    for _ in range(10):
        answer_round(s, seconds=2.0)
    assert s.allowed() == 4 and s.limit == 32.0  # healthy rounds do not grow past the bound
    learned = state(history=1)  # limits read from the provider's headers
    learned.learn(
        Slot(MODEL, 0, 1024),
        latency_s=3.0,
        completion_tokens=100,
        prompt_tokens=50,
        error_class=None,
        headers={"x-ratelimit-limit-tokens": "9000"},  # 150 tokens/s / 150 per request = 1/s
    )
    assert learned.bound() == 6 and learned.allowed() == 6


def test_never_above_max_concurrency() -> None:
    s = state(max_concurrency=6)
    for _ in range(10):
        answer_round(s, seconds=1.0)
    assert s.limit == 6.0


def test_timeout_is_learned_from_the_distribution_with_a_floor_and_a_ceiling() -> None:
    s = state(min_timeout_s=10.0, max_timeout_s=600.0, timeout_margin=2.0)
    assert s.timeout_s(1024) == 60.0  # nothing known yet: the configured timeout
    # 20 tokens/s, one slow answer in a hundred at 10 tokens/s: the 99th percentile counts it.
    for i in range(100):
        seconds = 20.0 if i == 50 else 10.0
        s.learn(Slot(MODEL, 0, 1024), latency_s=seconds, completion_tokens=200, error_class=None)
    assert s.per_token_q == pytest.approx(0.1)
    assert s.timeout_s(1024) == pytest.approx(2.0 * 0.1 * 1024)
    assert s.timeout_s(300) == pytest.approx(60.0)
    assert s.timeout_s(None) == pytest.approx(2.0 * 0.1 * 400)  # twice the longest answer seen
    fast = state(min_timeout_s=10.0)
    for _ in range(20):  # 1,000 tokens/s: 2 x 0.001 x 1024 = 2 s, below the floor
        fast.learn(Slot(MODEL, 0, 1024), latency_s=0.2, completion_tokens=200, error_class=None)
    assert fast.timeout_s(1024) == 10.0
    slow = state(max_timeout_s=600.0)
    slow.learn(Slot(MODEL, 0, 1024), latency_s=100.0, completion_tokens=100, error_class=None)
    assert slow.timeout_s(1024) == 600.0


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="max_concurrency"):
        AdaptiveConfig(max_concurrency=0)
    with pytest.raises(ValueError, match="min_timeout_s"):
        AdaptiveConfig(min_timeout_s=0)
    with pytest.raises(ValueError, match="latency_tolerance"):
        AdaptiveConfig(latency_tolerance=1.0)


async def test_slots_hold_the_limit_and_a_cancelled_waiter_frees_its_place() -> None:
    controller = AdaptiveController(AdaptiveConfig(max_concurrency=2))
    inside = 0
    most = 0
    release = asyncio.Event()

    async def request() -> None:
        nonlocal inside, most
        async with controller.slot(MODEL, 100):
            inside += 1
            most = max(most, inside)
            await release.wait()
            inside -= 1

    tasks = [asyncio.create_task(request()) for _ in range(5)]
    await asyncio.sleep(0.01)
    assert inside == 2 and controller.state(MODEL).in_flight == 2
    tasks[3].cancel()  # a waiter gives up
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert most == 2 and controller.state(MODEL).in_flight == 0
    assert not controller.state(MODEL).waiters


@dataclass
class Answer:
    latency_s: float
    prompt_tokens: int = 50
    completion_tokens: int = 200
    headers: dict | None = None


async def test_in_flight_deadlines_follow_what_is_learned() -> None:
    """A request sent under a short initial timeout is not given up on once answers show the
    server needs longer; with nothing learned the initial timeout applies."""
    config = AdaptiveConfig(min_timeout_s=0.05, max_timeout_s=5.0)
    controller = AdaptiveController(config, initial_timeout_s=0.4)

    async def answer_after(seconds: float) -> Answer:
        await asyncio.sleep(seconds)
        return Answer(latency_s=seconds)

    async def call(seconds: float) -> Answer:
        async with controller.slot(MODEL, 1024) as slot:
            return await slot.call(answer_after(seconds))

    with pytest.raises(ProviderError) as info:
        await call(1.0)
    assert info.value.error_class == "timeout" and "0.4 s" in info.value.message
    assert controller.state(MODEL).limit == 128.0  # an overload: halved
    slow = asyncio.create_task(call(1.0))  # sent with 0.4 s to go
    await asyncio.sleep(0.05)
    await call(0.2)  # an answer: 0.2 s for 200 tokens -> 2 x 0.001 s x 1,024 tokens
    assert controller.timeout_s(MODEL, 1024) == pytest.approx(2.048)
    assert (await slow).latency_s == 1.0  # its deadline moved from 0.4 s to 2.048 s


async def _drain(url: str) -> dict:
    """The simulator's server stats once it finished everything it accepted; fails only when
    it stops making progress."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        last, stalled_since = None, time.monotonic()
        while True:
            server = (await http.get("/simulator/stats")).json()["server"]
            if server["busy"] == 0 and server["queued"] == 0:
                return server
            if server["completed"] != last:
                last, stalled_since = server["completed"], time.monotonic()
            assert time.monotonic() - stalled_since < 10, f"simulator stopped working: {server}"
            await asyncio.sleep(0.05)


async def test_slow_server_small_job_abandons_nothing_where_fixed_defaults_do(
    simulator_factory,
) -> None:
    """A slow server (capacity 4, queueing beyond) at 50x the speed of a 20 tokens/s box:
    the README defaults scaled alike (concurrency 32, timeout 60 s -> 0.6 s)."""
    speed = 50.0
    config = SimulatorConfig(tokens_per_s=20 * speed, capacity=4, seed=2)
    urls = {"ours": simulator_factory(config), "fixed": simulator_factory(config)}
    adaptive = {
        "ours": AdaptiveConfig(min_timeout_s=10 / speed, min_queue_delay_s=2 / speed),
        "fixed": AdaptiveConfig(enabled=False),
    }
    sampler = RecipeSampler()
    recipes = [sampler.recipe(4, i) for i in range(40)]
    checker = StoryChecker()
    # Its first check loads inflection tables (seconds of CPU): not inside the measured runs.
    checker.check("A dog ran.", finish_reason="stop", required_words=["dog"])
    summaries, servers = {}, {}
    for name, url in urls.items():
        with tempfile.TemporaryDirectory() as out:
            summaries[name] = await generate_stories(
                recipes=recipes,
                out_dir=Path(out),
                client_config=ClientConfig(
                    base_url=url, api_key="k", timeout_s=60 / speed, provider="simulator"
                ),
                model=MODEL,
                pricing=PriceTable.load(),
                checker=checker,
                concurrency=32,
                max_tokens=1024,
                retry=RetryPolicy(max_attempts=3, base_s=0.01, max_s=0.1, jitter=0.01),
                adaptive=adaptive[name],
            )
        servers[name] = await _drain(url)
    ours, fixed = summaries["ours"], summaries["fixed"]
    assert ours.failed == 0 and ours.stories == 40 and ours.requests == 40
    assert servers["ours"]["abandoned"] == 0 and servers["ours"]["completed"] == 40
    # The fixed client gave up on answers the server then produced anyway.
    assert servers["fixed"]["abandoned"] > 0
    assert fixed.requests > 40 and servers["fixed"]["max_queued"] >= 20
