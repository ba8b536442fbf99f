"""Provider pools: breaker transitions, weighted routing, config files, keys kept out of sight,
and traffic moving off a failing simulator to a healthy one over real HTTP."""

from __future__ import annotations

import json
import random

import httpx
import pytest

from generator.breaker import CLOSED, HALF_OPEN, OPEN, BreakerPolicy, CircuitBreaker
from generator.checks import StoryChecker
from generator.engine import StoryEngine
from generator.errors import ProviderError
from generator.pool import (
    MemberConfig,
    ProviderPool,
    ProviderPools,
)
from generator.pool_config import PROVIDERS_ENV, PoolConfigError, load_pools, pools_from_dict
from generator.pricing import PriceTable
from generator.ratelimit import LocalRateLimiter
from generator.retry import RetryPolicy
from generator.simulator import SimulatorConfig
from vocab import Recipe

MODEL = "simulator-story-1"
SECRET = "sk-live-0123456789abcdefSECRET"
MESSAGES = [{"role": "user", "content": "Tell me a story about a dog."}]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_probes_and_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerPolicy(failures=3, cooldown_s=10), clock=clock)
    for _ in range(2):
        breaker.record_failure("server_error")
    breaker.record_failure("rate_limit")  # a 429 says nothing about health
    assert breaker.state == CLOSED and breaker.available()
    breaker.record_failure("connection")
    assert breaker.state == OPEN and not breaker.available()
    assert breaker.retry_in_s() == 10
    clock.now += 10
    assert breaker.state == HALF_OPEN and breaker.available()
    breaker.begin()
    assert not breaker.available(), "one probe at a time"
    breaker.record_failure("timeout")  # the probe failed: open again, twice as long
    assert breaker.state == OPEN and breaker.retry_in_s() == 20
    clock.now += 20
    breaker.begin()
    breaker.record_success()
    assert breaker.state == CLOSED and breaker.consecutive_failures == 0
    for _ in range(3):
        breaker.record_failure("server_error")
    assert breaker.retry_in_s() == 10, "a success resets the cool-down"


def test_a_closed_breaker_adopts_a_peers_open_state_and_an_open_one_keeps_its_own() -> None:
    clock = Clock()
    policy = BreakerPolicy(failures=2, cooldown_s=10, max_cooldown_s=100)
    breaker = CircuitBreaker(policy, clock=clock)
    assert breaker.adopt_open(500) and breaker.state == OPEN
    assert breaker.retry_in_s() == 100  # capped like any cool-down
    assert breaker.opened_count == 0  # the peer that opened it counted it
    clock.now += 100
    assert breaker.state == HALF_OPEN and breaker.available()
    breaker.begin()
    breaker.record_failure("server_error")  # its own probe failed: its own back-off
    assert breaker.state == OPEN and breaker.retry_in_s() == 100
    assert not breaker.adopt_open(5) and breaker.retry_in_s() == 100
    assert not CircuitBreaker(policy, clock=clock).adopt_open(0)


def test_breaker_opens_at_once_on_auth_and_probe_answers_close_it() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerPolicy(failures=5, auth_cooldown_s=300), clock=clock)
    breaker.record_failure("auth")
    assert breaker.state == OPEN and breaker.retry_in_s() == 300
    clock.now += 300
    breaker.begin()
    breaker.record_failure("bad_request")  # the member answered: it is up
    assert breaker.state == CLOSED
    breaker.record_failure("permission")
    assert breaker.state == OPEN


def pool_of(*members: MemberConfig, **kwargs) -> ProviderPool:
    return ProviderPool(MODEL, list(members), rng=random.Random(7), **kwargs)


def test_weighted_choice_among_healthy_members() -> None:
    clock = Clock()
    pool = pool_of(
        MemberConfig("a", "http://a/v1", weight=3),
        MemberConfig("b", "http://b/v1", weight=1),
        MemberConfig("c", "http://c/v1", weight=1),
        policy=BreakerPolicy(failures=1, cooldown_s=5),
        clock=clock,
    )
    pool.members[2].breaker.record_failure("server_error")  # c is open
    picks = [pool.choose().name for _ in range(4000)]
    assert picks.count("c") == 0
    assert picks.count("a") / len(picks) == pytest.approx(0.75, abs=0.03)
    for member in pool.members[:2]:
        member.breaker.record_failure("connection")
    with pytest.raises(ProviderError) as none_left:
        pool.choose()
    assert none_left.value.retryable and none_left.value.retry_after == pytest.approx(5)
    assert "a: open, b: open, c: open" in none_left.value.message
    clock.now += 5
    assert pool.choose().name in {"a", "b", "c"}  # a half-open probe


def test_keys_stay_out_of_reprs_snapshots_and_errors() -> None:
    pool = pool_of(MemberConfig("main", "https://user:pw@example.com/v1", api_key=SECRET))
    member = pool.members[0]
    member.record(ProviderError("auth", status=401, message=f"Incorrect API key: {SECRET}"))
    snapshot = json.dumps(ProviderPools([pool]).snapshot())
    for text in (
        repr(pool),
        repr(member),
        repr(member.config),
        snapshot,
        repr(member.batch_client()),
    ):
        assert SECRET not in text and "pw@" not in text
    row = json.loads(snapshot)[0]["members"][0]
    assert row["state"] == OPEN and row["errors"] == 1 and row["requests"] == 0
    assert row["last_error"].startswith("auth (status 401): Incorrect API key")


def test_config_file_and_environment(tmp_path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(
        """
breaker: {failures: 2, cooldown_s: 15}
pools:
  gpt-4o-mini:
    members:
      - {name: openai, base_url: "https://api.openai.com/v1", api_key_env: MY_KEY, weight: 3,
         rpm: 500, tpm: 200000}
      - {name: azure, base_url: "https://x.openai.azure.com/openai/v1", api_key: local,
         model: mini-eu}
    breaker: {cooldown_s: 60}
"""
    )
    pools = load_pools(path, env={"MY_KEY": SECRET})
    assert pools is not None
    pool = pools.pool("gpt-4o-mini")
    assert pool.policy == BreakerPolicy(failures=2, cooldown_s=60)
    first, second = (m.config for m in pool.members)
    assert (first.api_key, first.weight, first.rpm, first.tpm) == (SECRET, 3, 500, 200000)
    assert (second.api_key, second.model) == ("local", "mini-eu")
    assert pool.members[0].limiter is not None and pool.members[1].limiter is None
    with pytest.raises(PoolConfigError, match="environment variable MY_KEY is not set"):
        load_pools(path, env={})
    inline = json.dumps({"pools": {MODEL: {"members": [{"name": "s", "base_url": "http://s"}]}}})
    assert load_pools(env={PROVIDERS_ENV: inline}).pool(MODEL).members[0].name == "s"
    assert load_pools(env={}) is None
    with pytest.raises(PoolConfigError, match=r"pools.m.members\[0\]: unknown key\(s\) wieght"):
        pools_from_dict(
            {"pools": {"m": {"members": [{"name": "a", "base_url": "u", "wieght": 2}]}}}
        )
    with pytest.raises(PoolConfigError, match="weight must be > 0"):
        pools_from_dict(
            {"pools": {"m": {"members": [{"name": "a", "base_url": "u", "weight": 0}]}}}
        )
    with pytest.raises(ProviderError, match="no provider pool serves model 'other'"):
        pools.pool("other")


def sim_requests(url: str) -> int:
    stats = httpx.get(url.removesuffix("/v1") + "/v1/simulator/stats", timeout=10).json()
    return stats["counts"].get("requests", 0)


FAST = RetryPolicy(max_attempts=4, base_s=0.0, max_s=0.0, jitter=0.0)


async def test_traffic_moves_off_a_failing_member(simulator_factory) -> None:
    broken = simulator_factory(SimulatorConfig(rate_500=1.0))
    healthy = simulator_factory(SimulatorConfig())
    pool = pool_of(
        MemberConfig("broken", broken, weight=5),
        MemberConfig("healthy", healthy, weight=1),
        policy=BreakerPolicy(failures=3, cooldown_s=600),
    )
    try:
        for _ in range(30):
            result = await FAST.run(lambda _n: pool.chat(messages=MESSAGES, max_tokens=200))
            assert result.provider == "healthy" and result.text
    finally:
        await pool.aclose()
    # The broken member saw exactly the requests that opened its breaker.
    assert sim_requests(broken) == 3 and sim_requests(healthy) == 30
    rows = {row["name"]: row for row in pool.snapshot()["members"]}
    assert rows["broken"]["state"] == OPEN and rows["broken"]["errors"] == 3
    assert rows["broken"]["last_error"].startswith("server_error (status 500)")
    assert rows["healthy"]["state"] == CLOSED and rows["healthy"]["successes"] == 30


async def test_a_revoked_key_takes_a_member_out_at_once(simulator_factory) -> None:
    revoked = simulator_factory(SimulatorConfig(api_key="the-new-key"))
    healthy = simulator_factory(SimulatorConfig())
    pools = ProviderPools(
        [
            pool_of(
                MemberConfig("revoked", revoked, api_key="the-old-key", weight=100),
                MemberConfig("backup", healthy, weight=1),
            )
        ]
    )
    engine = StoryEngine(
        client=pools,  # the engine takes a pool where it takes a ChatClient
        limiter=LocalRateLimiter(),
        pricing=PriceTable.load(),
        retry=FAST,
        checker=StoryChecker(),
    )
    try:
        outcomes = [
            await engine.story(Recipe("jump", "ball", "red", ()), model=MODEL) for _ in range(5)
        ]
    finally:
        await pools.aclose()
    assert all(o.error is None for o in outcomes)
    assert {o.provider for o in outcomes} == {"backup"}
    assert sim_requests(revoked) == 1 and sim_requests(healthy) == 5
    row = pools.snapshot()[0]["members"][0]
    assert row["state"] == OPEN and row["retry_in_s"] > 250
    assert "the-old-key" not in json.dumps(pools.snapshot())
