"""End to end in one process: submit over the API, a worker makes the stories."""

from __future__ import annotations

import asyncio

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
