"""LocalRateLimiter: bucket math, refunds, header following, Retry-After, AIMD."""

from __future__ import annotations

import asyncio
import time

import pytest

from generator.ratelimit import (
    LocalRateLimiter,
    ModelLimits,
    TokenBucket,
    TokenEstimator,
    estimate_prompt_tokens,
    parse_reset,
)


def test_bucket_refill_and_wait_math() -> None:
    bucket = TokenBucket(per_minute=600, burst_s=1.0)  # 10/s, capacity 10
    assert bucket.capacity == 10
    now = bucket.updated
    bucket.take(10)
    assert bucket.wait_for(1, now) == pytest.approx(0.1)
    assert bucket.wait_for(5, now + 0.2) == pytest.approx(0.3)  # 2 refilled, 3 missing
    bucket.refill(now + 100)
    assert bucket.level == 10  # never above capacity
    # An oversized request waits for a full bucket instead of forever.
    assert bucket.wait_for(1000, now + 100) == 0.0


def test_bucket_follow_only_lowers_and_ages_the_report() -> None:
    bucket = TokenBucket(per_minute=6000, burst_s=1.0)  # 100/s, capacity 100
    now = bucket.updated
    bucket.take(10)
    seen = bucket.taken_total
    bucket.follow(remaining=500, seen_taken_total=seen, seen_at=now, now=now)
    assert bucket.level == pytest.approx(90)  # a higher report never raises the level
    bucket.take(5)  # sent after the reported request
    bucket.follow(remaining=20, seen_taken_total=seen, seen_at=now, now=now)
    assert bucket.level == pytest.approx(15)  # 20 reported - 5 sent since


def test_parse_reset_formats() -> None:
    assert parse_reset("20ms") == pytest.approx(0.02)
    assert parse_reset("6m0s") == pytest.approx(360)
    assert parse_reset("1.5s") == pytest.approx(1.5)
    assert parse_reset("2") == 2.0
    assert parse_reset("") is None and parse_reset("soon") is None


def test_estimator_moving_average_capped_by_max_tokens() -> None:
    est = TokenEstimator(default_completion=400, alpha=0.5)
    assert est.expected("m", None) == 400 and est.expected("m", 100) == 100
    est.observe("m", 200)
    assert est.expected("m", None) == 200  # first observation replaces the default
    est.observe("m", 300)
    assert est.expected("m", None) == 250
    assert estimate_prompt_tokens([{"role": "user", "content": "x" * 400}]) == 106


def test_estimator_takes_the_plain_mean_of_the_first_completions() -> None:
    est = TokenEstimator(default_completion=400, alpha=0.1)
    for tokens in (100, 200, 300):
        est.observe("m", tokens)
    assert est.expected("m", None) == 200  # mean, not 100 + 10% steps
    for _ in range(20):
        est.observe("m", 200)
    est.observe("m", 1200)
    assert est.expected("m", None) == 300  # later: moving average with weight alpha


async def test_fresh_estimate_is_taken_when_the_request_reaches_the_head() -> None:
    limiter = LocalRateLimiter(default=ModelLimits(tpm=60_000), safety=1.0)  # cap 1000 tokens
    current = {"value": 900}
    first = await limiter.acquire(model="m", est_tokens=900)
    queued = asyncio.create_task(
        limiter.acquire(model="m", est_tokens=900, estimate=lambda: current["value"])
    )
    await asyncio.sleep(0)
    current["value"] = 50  # learned while it waited: it fits now
    await limiter.settle(first, actual_tokens=900, headers=None, status=200, retry_after=None)
    permit = await asyncio.wait_for(queued, timeout=5)
    assert permit.est_tokens == 50


async def test_rpm_bucket_paces_requests() -> None:
    limiter = LocalRateLimiter(default=ModelLimits(rpm=1200), safety=1.0, burst_s=0.25)
    start = time.monotonic()
    for _ in range(15):  # 20/s, capacity 5: 10 requests must wait ~0.5 s
        permit = await limiter.acquire(model="m", est_tokens=1)
        await limiter.settle(permit, actual_tokens=1, headers=None, status=200, retry_after=None)
    elapsed = time.monotonic() - start
    assert 0.4 < elapsed < 1.2


async def test_tpm_refund_and_charge() -> None:
    limiter = LocalRateLimiter(default=ModelLimits(tpm=60_000), safety=1.0)  # 1000/s, cap 1000
    permit = await limiter.acquire(model="m", est_tokens=800)
    bucket = limiter._state("m").tokens
    level_after_reserve = bucket.level
    await limiter.settle(permit, actual_tokens=300, headers=None, status=200, retry_after=None)
    assert bucket.level == pytest.approx(min(1000, level_after_reserve + 500), abs=5)
    permit = await limiter.acquire(model="m", est_tokens=100)
    before = bucket.level
    await limiter.settle(permit, actual_tokens=600, headers=None, status=200, retry_after=None)
    assert bucket.level == pytest.approx(before - 500, abs=5)  # under-estimate is charged


async def test_retry_after_pauses_the_model() -> None:
    limiter = LocalRateLimiter()
    permit = await limiter.acquire(model="m", est_tokens=1)
    await limiter.settle(permit, actual_tokens=0, headers=None, status=429, retry_after=0.3)
    start = time.monotonic()
    await limiter.acquire(model="m", est_tokens=1)
    assert time.monotonic() - start >= 0.28
    start = time.monotonic()
    await limiter.acquire(model="other", est_tokens=1)  # other models are not paused
    assert time.monotonic() - start < 0.1


async def test_remaining_zero_header_pauses_until_reset() -> None:
    limiter = LocalRateLimiter(default=ModelLimits(rpm=6000))
    permit = await limiter.acquire(model="m", est_tokens=1)
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "300ms"}
    await limiter.settle(permit, actual_tokens=1, headers=headers, status=200, retry_after=None)
    start = time.monotonic()
    await limiter.acquire(model="m", est_tokens=1)
    assert time.monotonic() - start >= 0.2


async def test_limits_learned_from_headers() -> None:
    limiter = LocalRateLimiter()
    permit = await limiter.acquire(model="m", est_tokens=10)
    headers = {"x-ratelimit-limit-requests": "600", "x-ratelimit-limit-tokens": "90000"}
    await limiter.settle(permit, actual_tokens=10, headers=headers, status=200, retry_after=None)
    state = limiter._state("m")
    assert state.learned
    assert state.requests.rate == pytest.approx(600 / 60)  # safety 1.0 by default
    assert state.tokens.rate == pytest.approx(90000 / 60)


async def test_aimd_cuts_once_per_burst_then_grows() -> None:
    limiter = LocalRateLimiter(
        max_concurrency=64, decrease=0.5, increase=1.0, learn_from_headers=False
    )
    permits = [await limiter.acquire(model="m", est_tokens=1) for _ in range(40)]
    for permit in permits[:10]:  # a burst of 429s from requests sent before the cut
        await limiter.settle(permit, actual_tokens=0, headers=None, status=429, retry_after=None)
    after_cut = limiter.concurrency("m")
    assert after_cut == pytest.approx(20.0)  # min(64, 40 in flight) * 0.5, cut once
    assert limiter.stats["cuts"] == 1
    for permit in permits[10:]:
        await limiter.settle(permit, actual_tokens=1, headers=None, status=200, retry_after=None)
    grown = limiter.concurrency("m")
    assert after_cut < grown < after_cut + 2  # +1/c per success: about +1 per round
    permit = await limiter.acquire(model="m", est_tokens=1)  # sent after the cut
    await limiter.settle(permit, actual_tokens=0, headers=None, status=429, retry_after=None)
    assert limiter.stats["cuts"] == 2 and limiter.concurrency("m") < grown


async def test_concurrency_cap_blocks_until_settle() -> None:
    limiter = LocalRateLimiter(max_concurrency=2, learn_from_headers=False)
    first = await limiter.acquire(model="m", est_tokens=1)
    await limiter.acquire(model="m", est_tokens=1)
    third = asyncio.create_task(limiter.acquire(model="m", est_tokens=1))
    await asyncio.sleep(0.05)
    assert not third.done()
    await limiter.settle(first, actual_tokens=1, headers=None, status=200, retry_after=None)
    await asyncio.wait_for(third, timeout=1.0)


async def test_unknown_limits_probe_with_one_request_first() -> None:
    limiter = LocalRateLimiter(max_concurrency=8)
    first = await limiter.acquire(model="m", est_tokens=1)
    second = asyncio.create_task(limiter.acquire(model="m", est_tokens=1))
    await asyncio.sleep(0.05)
    assert not second.done()  # waits for the provider's headers
    headers = {"x-ratelimit-limit-requests": "6000"}
    await limiter.settle(first, actual_tokens=1, headers=headers, status=200, retry_after=None)
    await asyncio.wait_for(second, timeout=1.0)
    more = [await limiter.acquire(model="m", est_tokens=1) for _ in range(5)]
    assert len(more) == 5  # opened up after the probe
