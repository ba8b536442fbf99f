"""Shared rate limits and job budgets across processes (two limiter instances here)."""

from __future__ import annotations

import asyncio
import time

from generator.ratelimit import ModelLimits
from service.work.shared_limits import PostgresRateLimiter
from service.work.wiring import run_worker, worker_config


async def test_two_limiters_share_one_rpm_budget(sessionmaker) -> None:
    limits = {"m": ModelLimits(rpm=1200, tpm=None)}  # 20 requests per second in total
    a = PostgresRateLimiter(sessionmaker, limits, lease_s=0.2)
    b = PostgresRateLimiter(sessionmaker, limits, lease_s=0.2)
    await a.setup()
    stamps: list[float] = []

    async def hammer(limiter: PostgresRateLimiter, until: float) -> None:
        while time.monotonic() < until:
            permit = await limiter.acquire(model="m", est_tokens=100)
            stamps.append(time.monotonic())
            await limiter.settle(
                permit, actual_tokens=100, headers=None, status=200, retry_after=None
            )

    start = time.monotonic()
    duration = 3.0
    await asyncio.gather(*[hammer(lim, start + duration) for lim in (a, b) for _ in range(8)])
    elapsed = time.monotonic() - start
    # Allowed: refill over the run plus one second of burst plus the leases held locally.
    allowed = 20 * elapsed + 20 + 2 * 4
    assert len(stamps) <= allowed, (len(stamps), allowed)
    assert len(stamps) >= 0.6 * 20 * duration, len(stamps)  # loaded CI machines lag
    assert a.stats["acquired"] > 5 and b.stats["acquired"] > 5
    # Saturated, each round trip still takes a whole lease (4 requests): statements to Postgres
    # stay a quarter of the requests, however the two processes' polls line up.
    for limiter in (a, b):
        trips, acquired = limiter.stats["round_trips"], limiter.stats["acquired"]
        assert acquired <= 4 * trips <= acquired + 3, limiter.stats


async def test_a_cancelled_waiter_does_not_let_the_next_one_in_early(sessionmaker) -> None:
    limits = {"m": ModelLimits(rpm=60, tpm=None)}  # one a second, at most one held
    limiter = PostgresRateLimiter(sessionmaker, limits)
    await limiter.setup()
    started = time.monotonic()
    await limiter.acquire(model="m", est_tokens=1)  # the burst
    waiter = asyncio.create_task(limiter.acquire(model="m", est_tokens=1))
    for _ in range(1000):  # until it has taken the next request, not yet paid for by refill
        if limiter.stats["round_trips"] == 2:
            break
        await asyncio.sleep(0.005)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    assert waiter.cancelled()
    await limiter.acquire(model="m", est_tokens=1)
    assert time.monotonic() - started >= 0.99  # a second of refill for the second request
    assert limiter.stats["round_trips"] == 2  # it used what the cancelled waiter took


async def test_a_request_larger_than_a_second_of_tpm_waits_for_its_refill(sessionmaker) -> None:
    limits = {"m": ModelLimits(rpm=None, tpm=6000)}  # 100 tokens a second, at most 100 held
    a = PostgresRateLimiter(sessionmaker, limits)
    b = PostgresRateLimiter(sessionmaker, limits)
    await a.setup()
    started = time.monotonic()

    async def timed(limiter: PostgresRateLimiter, tokens: int) -> float:
        await limiter.acquire(model="m", est_tokens=tokens)
        return time.monotonic() - started

    big, small = await asyncio.gather(timed(a, 250), timed(b, 50))
    assert big >= 1.45, big  # 150 tokens beyond the burst
    assert max(big, small) >= 1.95, (big, small)  # 300 in all: the burst, then 100 a second
    assert a.stats["round_trips"] == b.stats["round_trips"] == 1


async def test_a_429_pauses_the_model_for_every_process(sessionmaker) -> None:
    limits = {"m": ModelLimits(rpm=6000, tpm=None)}
    a = PostgresRateLimiter(sessionmaker, limits)
    b = PostgresRateLimiter(sessionmaker, limits)
    await a.setup()
    permit = await a.acquire(model="m", est_tokens=10)
    await a.settle(permit, actual_tokens=None, headers=None, status=429, retry_after=0.5)
    start = time.monotonic()
    await b.acquire(model="m", est_tokens=10)
    assert time.monotonic() - start >= 0.4


async def test_job_stops_at_its_budget(api, settings, simulator_url, sessionmaker) -> None:
    from sqlalchemy import text

    resp = await api.post("/v1/jobs", json={"n_stories": 200, "budget_usd": 0.002, "seed": 2})
    job_id = resp.json()["id"]
    s = settings.model_copy(update={"simulator_base_url": simulator_url})
    await run_worker(
        s,
        config=worker_config(s, idle_exit=True, concurrency=8, poll_s=0.05),
        install_signals=False,
    )
    job = (await api.get(f"/v1/jobs/{job_id}")).json()
    assert job["status"] == "budget_exhausted"
    assert 0 < job["cost_usd"] <= 0.002
    assert job["reserved_usd"] == 0
    assert 0 < job["completed"] + job["rejected"] < 200
    async with sessionmaker() as session:
        total = (
            await session.execute(
                text("SELECT sum(cost_usd) FROM requests WHERE job_id = :j"), {"j": job_id}
            )
        ).scalar_one()
    assert float(total) == job["cost_usd"]
    assert (await api.post(f"/v1/jobs/{job_id}/resume")).status_code == 409
