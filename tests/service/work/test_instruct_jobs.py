"""An instruct job end to end with the simulator: summaries, both calls costed, dedup on arrival."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy import text

from service.work.wiring import run_worker, worker_config


async def test_instruct_job_summaries_costs_and_dedup(
    api, settings, simulator_url, sessionmaker
) -> None:
    resp = await api.post(
        "/v1/jobs",
        json={
            "n_stories": 24,
            "model": "simulator-story-1",
            "seed": 11,
            "budget_usd": 10.0,
            "instruct": True,
        },
    )
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["id"]
    s = settings.model_copy(update={"simulator_base_url": simulator_url})
    await run_worker(
        s,
        config=worker_config(s, idle_exit=True, concurrency=6, poll_s=0.05),
        install_signals=False,
    )
    async with sessionmaker() as session:
        stories = (
            await session.execute(
                text(
                    "SELECT accepted, summary, instruction, text, dedup_status, task_id "
                    "FROM stories WHERE job_id = :j"
                ),
                {"j": job_id},
            )
        ).all()
        kinds = dict(
            (
                await session.execute(
                    text(
                        "SELECT kind, count(*) FROM requests WHERE job_id = :j AND outcome = 'ok' "
                        "AND cost_usd > 0 GROUP BY kind"
                    ),
                    {"j": job_id},
                )
            ).all()
        )
        spent, req_cost = (
            await session.execute(
                text(
                    "SELECT j.spent_usd, (SELECT sum(cost_usd) FROM requests WHERE job_id = j.id) "
                    "FROM jobs j WHERE j.id = :j"
                ),
                {"j": job_id},
            )
        ).one()
    accepted = [r for r in stories if r.accepted]
    assert len(accepted) >= 12
    for r in accepted:
        assert r.summary and r.summary not in r.text
        assert r.instruction and r.instruction.endswith("\n")
        headers = {line.split(":")[0] for line in r.instruction.splitlines() if line}
        assert headers and headers <= {"Summary", "Words", "Features", "Random sentence"}
        assert r.dedup_status in ("unique", "near_duplicate", "exact_duplicate")
    assert all(r.dedup_status is None for r in stories if not r.accepted)
    # Both calls of every accepted story are paid for and recorded.
    assert kinds["summary"] >= len(accepted) and kinds["story"] >= len(stories)
    assert Decimal(spent) == Decimal(req_cost) > 0
    job = (await api.get(f"/v1/jobs/{job_id}")).json()
    assert job["duplicates"] == sum(r.dedup_status != "unique" for r in accepted)
    assert 0.0 <= job["duplicate_rate"] <= 1.0
    stats = (await api.get("/v1/stats/duplicates", params={"job_id": job_id})).json()
    assert stats["checked"] == len(accepted)
    assert stats["items"][0]["model"] == "simulator-story-1"


async def test_worker_dedups_on_arrival(api, settings, simulator_url, sessionmaker) -> None:
    """Two workers at once; every third story's text is replaced by one fixed story."""
    from service.work.task import DedupStoryProcessor

    fixed = (
        "Once upon a time, a little dog named Sam found a red ball in the park. He ran and "
        "ran with it all day. When the sun went down, Sam took the ball home and slept."
    )

    class Repeating(DedupStoryProcessor):
        async def after_story(self, task, story) -> None:
            if task.index % 3 == 0:
                story["text"] = fixed
            await super().after_story(task, story)

    resp = await api.post(
        "/v1/jobs",
        json={"n_stories": 30, "model": "simulator-story-1", "seed": 5, "budget_usd": 10.0},
    )
    job_id = resp.json()["id"]
    s = settings.model_copy(update={"simulator_base_url": simulator_url})
    config = worker_config(s, idle_exit=True, concurrency=4, poll_s=0.05)
    await asyncio.gather(
        *(
            run_worker(s, config=config, processor_factory=Repeating, install_signals=False)
            for _ in range(2)
        )
    )
    async with sessionmaker() as session:
        rows = (
            await session.execute(
                text(
                    "SELECT id, text, dedup_status, dedup_cluster_id FROM stories "
                    "WHERE job_id = :j AND accepted ORDER BY id"
                ),
                {"j": job_id},
            )
        ).all()
        rolled = (
            await session.execute(
                text("SELECT sum(duplicates) FROM rollups_minute WHERE job_id = :j"), {"j": job_id}
            )
        ).scalar()
    copies = [r for r in rows if r.text == fixed]
    assert len(copies) >= 3
    first = copies[0]
    assert first.dedup_status == "unique"
    assert all(
        (r.dedup_status, r.dedup_cluster_id) == ("exact_duplicate", first.id) for r in copies[1:]
    )
    dups = sum(r.dedup_status != "unique" for r in rows)
    assert dups >= len(copies) - 1 and rolled == dups
    job = (await api.get(f"/v1/jobs/{job_id}")).json()
    assert job["duplicates"] == dups
    assert job["duplicate_rate"] == pytest.approx(dups / len(rows), abs=1e-5)
    assert job["duplicates_by_model"]["simulator-story-1"]["duplicates"] == dups
    # The dashboard reads the duplicate counter from the rollups.
    health = (await api.get("/admin/data/health")).json()["since_start"]
    assert health["duplicates"] == dups
    assert health["duplicate_rate"] == pytest.approx(dups / health["stories_accepted"])


async def test_generation_waits_for_the_dedup_backlog(
    api, settings, simulator_url, sessionmaker
) -> None:
    """Over the backlog limit the worker claims nothing until the indexer has caught up, and
    the job still completes with every story checked."""
    from service.dataset.minhash import text_hash
    from service.store.imports import insert_stories

    async with sessionmaker() as session, session.begin():  # stored, not checked yet
        texts = [f"Story number {i} about a cat and a red ball in the big park." for i in range(5)]
        await insert_stories(
            session=session,
            stories=[{"text": t, "accepted": True, "text_hash": text_hash(t)} for t in texts],
        )
    resp = await api.post(
        "/v1/jobs",
        json={"n_stories": 40, "model": "simulator-story-1", "seed": 9, "budget_usd": 10.0},
    )
    job_id = resp.json()["id"]
    s = settings.model_copy(update={"simulator_base_url": simulator_url})
    config = worker_config(
        s, idle_exit=True, concurrency=16, poll_s=0.05, dedup_s=0.2, max_dedup_backlog=3
    )
    stats = await run_worker(s, config=config, install_signals=False)
    assert stats.dedup_waits > 0
    job = (await api.get(f"/v1/jobs/{job_id}")).json()
    assert job["status"] == "completed" and job["completed"] + job["rejected"] == 40
    async with sessionmaker() as session:
        unchecked = (
            await session.execute(
                text("SELECT count(*) FROM stories WHERE accepted AND dedup_status IS NULL"),
            )
        ).scalar_one()
    assert unchecked == 0
