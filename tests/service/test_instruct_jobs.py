"""An instruct job end to end with the simulator: summaries, both calls costed, dedup on arrival."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import text

from service.runner import run_worker, worker_config


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
