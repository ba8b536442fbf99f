"""Diversity figures move the right way: a job stuck on one recipe against a normal one,
through the real worker, simulator and dedup indexer."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import pytest

from service import store
from service.store.diversity_report import diversity_report
from service.store.jobs import TaskSpec

MODEL = "simulator-story-1"
N = 150
FIXED = {"verb": "jump", "noun": "ball", "adjective": "happy", "features": ["Dialogue"]}


async def _job(sessionmaker: Any, *, fixed: bool) -> uuid.UUID:
    job_id = uuid.uuid4()
    async with sessionmaker() as s, s.begin():
        await store.create_job(
            session=s,
            job_id=job_id,
            fields={
                "n_stories": N,
                "models": [{"model": MODEL, "weight": 1.0}],
                "template_version": "v1",
                "max_tokens": 600,
                "seed": 11,
                "budget_usd": Decimal(5),
                "provider": "simulator",
            },
            # The sampler fixed to one recipe, or None: recipes derived from (seed, index).
            tasks=[TaskSpec(index=i, recipe=dict(FIXED), model=MODEL) for i in range(N)]
            if fixed
            else None,
        )
    return job_id


async def _generate(settings: Any, simulator_url: str) -> None:
    from service.work.wiring import run_worker, worker_config

    s = settings.model_copy(update={"simulator_base_url": simulator_url})
    config = worker_config(s, idle_exit=True, concurrency=16, poll_s=0.05)
    await run_worker(s, config=config, install_signals=False)


@pytest.mark.asyncio
async def test_fixed_recipe_job_reads_low_coverage_high_similarity(
    settings: Any, simulator_url: str, sessionmaker: Any
) -> None:
    fixed = await _job(sessionmaker, fixed=True)
    normal = await _job(sessionmaker, fixed=False)
    await _generate(settings, simulator_url)
    async with sessionmaker() as s:
        stuck = await diversity_report(session=s, job_id=fixed)
        varied = await diversity_report(session=s, job_id=normal)
        overall = await diversity_report(session=s)
    assert 0 < stuck["stories"] <= N and 0 < varied["stories"] <= N
    assert overall["stories"] == stuck["stories"] + varied["stories"]
    for role in ("verb", "noun", "adjective"):
        assert stuck["recipe_coverage"][role]["used"] == 1
        # Recipes drawn from ~250-1,100 words per role: most of N draws are distinct words.
        assert varied["recipe_coverage"][role]["used"] > 0.25 * varied["stories"]
    assert stuck["recipe_coverage"]["noun"]["most_used"][0] == {
        "word": "ball",
        "count": stuck["stories"],
    }
    dialogue = {f["feature"]: f for f in stuck["features"]}["Dialogue"]
    assert dialogue["actual"] == 1.0 and dialogue["configured"] == 0.5
    # One recipe: the simulator's stories share its sentences, so more of them find an earlier
    # story with a Jaccard of 0.1 or more than a varied job's do (docs/diversity.md).
    high = stuck["nearest_neighbour"]["share_at_least"]["0.1"]
    low = varied["nearest_neighbour"]["share_at_least"]["0.1"]
    assert high >= 0.05 and high > 2 * low
    assert stuck["nearest_neighbour"]["checked"] == stuck["stories"]
    for n in ("distinct_2", "distinct_3"):
        assert stuck["distinct"][n] < varied["distinct"][n]
