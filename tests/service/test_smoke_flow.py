"""End to end in one process: submit over the API, a worker makes the stories."""

from __future__ import annotations

import asyncio

import pytest

from service.work.wiring import run_worker, worker_config


async def test_job_runs_to_completion(api, settings, simulator_url) -> None:
    resp = await api.post(
        "/v1/jobs",
        json={
            "n_stories": 30,
            "model": "simulator-story-1",
            "seed": 3,
            "budget_usd": 10.0,
            "instruct": True,
        },
    )
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["status"] == "queued"
    assert job["simulator"] is True
    s = settings.model_copy(update={"simulator_base_url": simulator_url})
    stats = await run_worker(
        s,
        config=worker_config(s, idle_exit=True, concurrency=8, poll_s=0.05),
        install_signals=False,
    )
    assert stats.stories + stats.failed == 30
    job = (await api.get(f"/v1/jobs/{job['id']}")).json()
    assert job["status"] == "completed"
    assert job["completed"] + job["rejected"] + job["failed"] == 30
    assert job["completed"] > 0
    assert 0 < job["cost_usd"] <= 10.0
    assert job["requests_per_minute"] > 0
    page = (await api.get(f"/v1/jobs/{job['id']}/stories", params={"limit": 10})).json()
    assert len(page["items"]) == 10 and page["next_cursor"]
    story = page["items"][0]
    assert story["provider"] == "simulator"
    accepted = [s for s in page["items"] if s["accepted"]]
    assert accepted and all(s["summary"] and s["instruction"] for s in accepted)
    await asyncio.sleep(0)


async def test_a_job_priced_on_submit_runs_an_unpriced_model_at_its_price(
    api, settings, simulator_url, sessionmaker
) -> None:
    from sqlalchemy import text

    body = {"n_stories": 6, "model": "my-local-model", "seed": 4, "budget_usd": 1.0}
    refused = await api.post("/v1/jobs", json=body)
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert detail["field"] == "model" and "--price-input" in detail["message"]
    bad = await api.post("/v1/jobs", json={**body, "price": {"input": -1, "output": 0}})
    assert bad.status_code == 422 and "price" in bad.text

    free = (await api.post("/v1/jobs", json={**body, "price": {"input": 0, "output": 0}})).json()
    paid = (
        await api.post(
            "/v1/jobs",
            json={**body, "seed": 5, "prices": {"my-local-model": {"input": 100, "output": 300}}},
        )
    ).json()
    assert free["prices"] == {"my-local-model": {"input": 0.0, "output": 0.0}}
    s = settings.model_copy(update={"simulator_base_url": simulator_url})
    await run_worker(
        s,
        config=worker_config(s, idle_exit=True, concurrency=4, poll_s=0.05),
        install_signals=False,
    )
    async with sessionmaker() as session:
        usage = {
            str(job_id): (prompt, completion, cost)
            for job_id, prompt, completion, cost in (
                await session.execute(
                    text(
                        "SELECT job_id, sum(prompt_tokens), sum(completion_tokens), sum(cost_usd) "
                        "FROM requests WHERE job_id = ANY(:ids) GROUP BY job_id"
                    ),
                    {"ids": [free["id"], paid["id"]]},
                )
            ).all()
        }
    free = (await api.get(f"/v1/jobs/{free['id']}")).json()
    paid = (await api.get(f"/v1/jobs/{paid['id']}")).json()
    assert free["status"] == paid["status"] == "completed"
    prompt, completion, cost = usage[free["id"]]
    assert prompt > 0 and completion > 0 and cost == 0 and free["cost_usd"] == 0
    prompt, completion, cost = usage[paid["id"]]
    expected = (prompt * 100 + completion * 300) / 1e6
    assert float(cost) == pytest.approx(expected, rel=1e-6)
    assert paid["cost_usd"] == pytest.approx(expected, rel=1e-6)
