"""Budgets finish jobs: a budget for N stories at the measured mean cost makes >= 95% of N
without exceeding it; the exhausted job holds its tasks; a raised budget (PATCH) resumes it."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import text

from service.store.dashboard import queue_depth
from service.work.wiring import run_worker, worker_config

MODEL = "simulator-story-1"


async def _work(settings, simulator_url: str, concurrency: int = 16) -> None:
    s = settings.model_copy(update={"simulator_base_url": simulator_url})
    await run_worker(
        s,
        config=worker_config(s, idle_exit=True, concurrency=concurrency, poll_s=0.05),
        install_signals=False,
    )


async def _job(api, job_id: str) -> dict:
    resp = await api.get(f"/v1/jobs/{job_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_budget_finishes_the_job_it_pays_for_and_a_raised_budget_resumes_it(
    api, settings, simulator_url, sessionmaker
) -> None:
    # The mean cost of a story, measured on a job that is not short of money.
    resp = await api.post(
        "/v1/jobs", json={"n_stories": 30, "model": MODEL, "seed": 1, "budget_usd": 10.0}
    )
    calibration = resp.json()["id"]
    await _work(settings, simulator_url)
    done = await _job(api, calibration)
    assert done["status"] == "completed"
    mean = Decimal(str(done["cost_usd"])) / (done["completed"] + done["rejected"])

    n_paid = 40
    budget = float((mean * n_paid).quantize(Decimal("1e-9")))
    resp = await api.post(
        "/v1/jobs", json={"n_stories": 300, "model": MODEL, "seed": 2, "budget_usd": budget}
    )
    job_id = resp.json()["id"]
    await _work(settings, simulator_url)
    job = await _job(api, job_id)
    made = job["completed"] + job["rejected"]
    assert job["status"] == "budget_exhausted", job
    # N at the job's own measured mean cost (the calibration only sized the budget).
    n_covered = budget / (job["cost_usd"] / made)
    assert made >= 0.95 * n_covered, (made, n_covered, job)
    assert job["cost_usd"] <= budget and job["reserved_usd"] == 0
    assert "raise budget_usd" in job["last_error"]
    async with sessionmaker() as s:
        states = dict(
            (
                await s.execute(
                    text("SELECT status, count(*) FROM tasks WHERE job_id = :j GROUP BY 1"),
                    {"j": job_id},
                )
            ).all()
        )
        depth = await queue_depth(session=s)
    assert "pending" not in states and states["held"] == 300 - made, states
    assert depth == {"pending": 0, "running": 0}

    # Ended jobs keep their budget; a budget below the spend is refused.
    ended = await api.patch(f"/v1/jobs/{calibration}", json={"budget_usd": 20})
    assert ended.status_code == 409, ended.text
    low = await api.patch(f"/v1/jobs/{job_id}", json={"budget_usd": budget / 10})
    assert low.status_code == 422 and low.json()["detail"]["field"] == "budget_usd"
    raised = float((mean * (n_paid + 20)).quantize(Decimal("1e-9")))
    resp = await api.patch(f"/v1/jobs/{job_id}", json={"budget_usd": raised})
    assert resp.status_code == 200 and resp.json()["budget_usd"] == raised
    assert resp.json()["status"] == "budget_exhausted"
    resp = await api.post(f"/v1/jobs/{job_id}/resume")
    assert resp.status_code == 200 and resp.json()["status"] == "running", resp.text
    await _work(settings, simulator_url)
    job = await _job(api, job_id)
    more = job["completed"] + job["rejected"] - made
    assert job["status"] == "budget_exhausted" and job["cost_usd"] <= raised
    assert more >= 0.95 * 20 - 1, (more, job)
