"""Tasks made by the claims that need them: one row per job at submit, every index claimed once,
recipes and models that depend on (seed, index) alone."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

from sqlalchemy import text

from service import store
from service.store.dashboard import queue_depth
from service.store.task_plan import MAKE_TASKS_CHUNK, pick_model
from vocab import RecipeSampler

MIX = [{"model": "a", "weight": 0.3}, {"model": "b", "weight": 0.7}]


async def _lazy_job(sessionmaker, n: int, *, seed: int = 11, feature_probs=None) -> uuid.UUID:
    job_id = uuid.uuid4()
    async with sessionmaker() as s, s.begin():
        await store.create_job(
            session=s,
            job_id=job_id,
            fields={
                "n_stories": n,
                "models": MIX,
                "template_version": "v1",
                "feature_probs": feature_probs,
                "max_tokens": 100,
                "seed": seed,
                "budget_usd": Decimal(1),
                "provider": "simulator",
            },
        )
    return job_id


async def _claim(sessionmaker, worker: str, limit: int):
    async with sessionmaker() as s, s.begin():
        return await store.claim_tasks(session=s, worker_id=worker, limit=limit, lease_s=60)


async def test_concurrent_claims_make_and_take_every_index_once(sessionmaker) -> None:
    n = MAKE_TASKS_CHUNK * 2 + 37
    probs = {"Dialogue": 1.0, "Twist": 0.0}
    job_id = await _lazy_job(sessionmaker, n, feature_probs=probs)
    async with sessionmaker() as s:
        assert (await s.execute(text("SELECT count(*) FROM tasks"))).scalar_one() == 0
        assert await queue_depth(session=s) == {"pending": n, "running": 0}

    claimed = []
    while len(claimed) < n:
        rounds = await asyncio.gather(*[_claim(sessionmaker, f"w{i}", 300) for i in range(4)])
        got = [t for batch in rounds for t in batch]
        assert got, f"claims stalled at {len(claimed)} of {n}"
        claimed += got
    assert await _claim(sessionmaker, "late", 10) == []

    assert sorted(t.index for t in claimed) == list(range(n))
    sampler = RecipeSampler(feature_probs=probs)
    for task in claimed[::97]:
        assert task.recipe == sampler.recipe(11, task.index).to_dict()
        assert task.model == pick_model(MIX, 11, task.index)
        assert "Dialogue" in task.recipe["features"] and "Twist" not in task.recipe["features"]
    async with sessionmaker() as s:
        job = await store.get_job(session=s, job_id=job_id)
        stored = (
            await s.execute(
                text("SELECT count(*), count(recipe), count(model) FROM tasks WHERE job_id = :j"),
                {"j": job_id},
            )
        ).one()
        assert job.tasks_made == n and tuple(stored) == (n, n, n)
        assert job.status == "running"
        assert await queue_depth(session=s) == {"pending": 0, "running": n}
    share_b = sum(t.model == "b" for t in claimed) / n
    assert 0.6 < share_b < 0.8


async def test_ended_jobs_make_no_more_tasks(sessionmaker) -> None:
    paused = await _lazy_job(sessionmaker, 5000, seed=1)
    cancelled = await _lazy_job(sessionmaker, 5000, seed=2)
    assert len(await _claim(sessionmaker, "w", 10)) == 10
    async with sessionmaker() as s, s.begin():
        await store.transition_job(session=s, job_id=paused, action="pause")
        await store.transition_job(session=s, job_id=cancelled, action="cancel")
    assert await _claim(sessionmaker, "w", 10) == []
    async with sessionmaker() as s:
        made = (
            await s.execute(
                text("SELECT sum(tasks_made) FROM jobs WHERE id = ANY(:ids)"),
                {"ids": [paused, cancelled]},
            )
        ).one()
        assert made[0] <= MAKE_TASKS_CHUNK * 2
        assert await queue_depth(session=s) == {"pending": 0, "running": 10}
    async with sessionmaker() as s, s.begin():
        await store.transition_job(session=s, job_id=paused, action="resume")
    resumed = await _claim(sessionmaker, "w", 20)
    assert len(resumed) == 20 and {t.job_id for t in resumed} == {paused}
