"""Spend is never understated: a worker killed mid-request is charged for what the provider
billed (its calls in flight at their reservation), and its leases return once its heartbeat
stops, long before they expire."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg

from service import store
from service.store.jobs import TaskSpec
from tests.service.reliability import (
    assert_job_consistent,
    job_row,
    libpq,
    start_worker,
    stop_all,
    worker_env,
)

MODEL = "simulator-story-1"
MAX_TOKENS = 30  # every simulated story is longer: each answer bills exactly this many tokens
CONCURRENCY = 8


async def make_job(sessionmaker, n: int, *, budget: str = "1") -> uuid.UUID:
    """n tasks with one recipe: every request has the same prompt, so the same price."""
    from vocab import RecipeSampler

    recipe = RecipeSampler().recipe(0, 0).to_dict()
    job_id = uuid.uuid4()
    async with sessionmaker() as s, s.begin():
        await store.create_job(
            session=s,
            job_id=job_id,
            fields={
                "n_stories": n,
                "models": [{"model": MODEL, "weight": 1.0}],
                "template_version": "v1",
                "max_tokens": MAX_TOKENS,
                "seed": 0,
                "budget_usd": Decimal(budget),
                "provider": "simulator",
            },
            tasks=[TaskSpec(index=i, recipe=recipe, model=MODEL) for i in range(n)],
        )
    return job_id


def reserved_prompt_tokens() -> int:
    """The prompt size a story call reserves for (the engine's estimate)."""
    from generator.prompts import render_story_prompt
    from generator.ratelimit import estimate_prompt_tokens
    from vocab import Recipe, RecipeSampler

    recipe = Recipe.from_dict(RecipeSampler().recipe(0, 0).to_dict())
    return estimate_prompt_tokens([{"role": "user", "content": render_story_prompt(recipe, "v1")}])


async def sim_counts(sim_url: str) -> dict[str, int]:
    """What the simulator received and answered (answered = billed)."""
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{sim_url}/simulator/stats")).json()["counts"]


async def wait_until(check, *, what: str, stall_s: float = 60.0, progress=None) -> None:
    """Poll `check()` until true; fail only when `progress()` stops changing for stall_s."""
    last, since = None, time.monotonic()
    while not await check():
        now_progress = await progress() if progress else None
        if now_progress != last:
            last, since = now_progress, time.monotonic()
        assert time.monotonic() - since < stall_s, f"no progress for {stall_s}s waiting for {what}"
        await asyncio.sleep(0.1)


async def test_killed_workers_calls_are_charged_and_its_leases_return(
    sessionmaker, database_url: str, tmp_path: Path
) -> None:
    from generator.pricing import PriceTable
    from generator.simulator import SimulatorConfig, run_simulator

    job_id = await make_job(sessionmaker, 40)
    config = SimulatorConfig(latency_median_s=1.5, latency_p99_s=2.0, seed=3)
    procs = []
    with run_simulator(config, subprocess_mode=True) as sim_url:
        # Leases far longer than the test: only the dead worker's heartbeat can return them.
        env = worker_env(
            database_url,
            sim_url,
            tmp_path / "home",
            TINYSTORIES_LEASE_SECONDS="600",
            TINYSTORIES_HEARTBEAT_SECONDS="0.5",
        )
        try:
            procs.append(start_worker(env, tmp_path / "victim.log", concurrency=CONCURRENCY))

            async def in_flight() -> bool:
                c = await sim_counts(sim_url)
                return c.get("requests", 0) - c.get("story", 0) >= CONCURRENCY // 2

            await wait_until(
                in_flight, what="calls in flight", progress=lambda: sim_counts(sim_url)
            )
            procs[0].kill()
            procs[0].wait()
            with psycopg.connect(libpq(database_url), autocommit=True) as conn:
                stranded = conn.execute(
                    "SELECT count(*) FROM tasks WHERE status = 'running'"
                ).fetchone()[0]
            assert stranded > 0
            procs.append(start_worker(env, tmp_path / "rescuer.log", concurrency=CONCURRENCY))

            async def finished() -> bool:
                return job_row(database_url, str(job_id))["status"] == "completed"

            async def done() -> int:
                row = job_row(database_url, str(job_id))
                return row["completed"] + row["rejected"] + row["n_requests"]

            await wait_until(finished, what="the job", progress=done)

            async def all_answered() -> bool:  # the dead worker's last calls are billed too
                c = await sim_counts(sim_url)
                return c.get("requests", 0) == c.get("story", 0)

            await wait_until(
                all_answered, what="the simulator", progress=lambda: sim_counts(sim_url)
            )
            counts = await sim_counts(sim_url)
        finally:
            stop_all(procs)
    job = assert_job_consistent(database_url, str(job_id))
    with psycopg.connect(libpq(database_url)) as conn:
        answered = conn.execute(
            "SELECT DISTINCT prompt_tokens, completion_tokens FROM requests WHERE outcome = 'ok'"
        ).fetchall()
        (charged,) = conn.execute(
            "SELECT count(*) FROM requests WHERE error_class = 'unreconciled'"
        ).fetchone()
    ((prompt_tokens, completion_tokens),) = answered  # one price for every answered call
    assert completion_tokens == MAX_TOKENS
    pricing = PriceTable.load()
    price = store.jobs.money(pricing.cost(MODEL, prompt_tokens, MAX_TOKENS))
    billed = counts["story"] * price
    assert job["spent_usd"] >= billed, (job["spent_usd"], billed, counts)
    # ... and above it by no more than the worst case of the dead worker's calls.
    assert 0 < charged <= CONCURRENCY
    worst = store.jobs.money(pricing.cost(MODEL, reserved_prompt_tokens(), MAX_TOKENS))
    assert job["spent_usd"] - billed <= worst * charged
    # The stranded leases came back on the heartbeat, not after their 600 s lease.
    assert job["status"] == "completed"
