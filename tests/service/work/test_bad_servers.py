"""Servers that misbehave, met by a real worker over real HTTP: one that closes the connection
mid-answer, one that ignores max_tokens, one that answers in another error dialect. Each gives
one clear line on the job, every call is recorded (at its worst case when the provider may have
billed it), and nothing is stored twice."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text

from generator.simulator import SimulatorConfig, run_simulator
from service.work.wiring import run_worker, worker_config


async def _run_job(api, settings, sim_config: SimulatorConfig, **body) -> tuple[dict, str]:
    with run_simulator(sim_config) as url:
        job = (
            await api.post("/v1/jobs", json={"n_stories": 3, "budget_usd": 1.0, "seed": 9, **body})
        ).json()
        s = settings.model_copy(update={"simulator_base_url": url, "max_attempts": 2})
        await run_worker(
            s,
            config=worker_config(s, idle_exit=True, concurrency=3, poll_s=0.05),
            install_signals=False,
        )
    return (await api.get(f"/v1/jobs/{job['id']}")).json(), job["id"]


async def _requests(sessionmaker, job_id: str) -> list:
    async with sessionmaker() as s:
        return (
            await s.execute(
                text(
                    "SELECT outcome, error_class, completion_tokens, cost_usd FROM requests "
                    "WHERE job_id = :j ORDER BY id"
                ),
                {"j": uuid.UUID(job_id)},
            )
        ).all()


async def test_a_connection_closed_mid_answer_is_one_line_and_charged(
    api, settings, sessionmaker
) -> None:
    from generator.pricing import PriceTable

    job, job_id = await _run_job(
        api, settings, SimulatorConfig(seed=4, rate_disconnect=1.0), max_tokens=100
    )
    assert job["status"] == "failed" and job["failed"] == 3 and job["completed"] == 0
    assert "closed the connection mid-answer" in job["last_error"]
    assert "\n" not in job["last_error"] and "Traceback" not in job["last_error"]
    rows = await _requests(sessionmaker, job_id)
    # 3 tasks x 2 attempts x 2 calls each (the engine's retries), every one recorded.
    assert len(rows) == 3 * 2 * 2 and {r.error_class for r in rows} == {"connection"}
    # The provider did the work: each call is charged at its worst case (100 completion
    # tokens at least), not $0.
    floor = PriceTable.load().cost("simulator-story-1", 0, 100)
    assert all(float(r.cost_usd) >= floor for r in rows)
    assert job["cost_usd"] == pytest.approx(sum(float(r.cost_usd) for r in rows), rel=1e-6)


async def test_a_server_that_ignores_max_tokens_is_billed_what_it_sent(
    api, settings, sessionmaker
) -> None:
    job, job_id = await _run_job(
        api, settings, SimulatorConfig(seed=5, rate_ignore_max_tokens=1.0), max_tokens=40
    )
    assert job["status"] == "completed" and job["completed"] + job["rejected"] == 3
    rows = await _requests(sessionmaker, job_id)
    assert len(rows) == 3 and all(r.outcome == "ok" and r.completion_tokens > 80 for r in rows)
    assert job["completion_tokens"] == sum(r.completion_tokens for r in rows)
    async with sessionmaker() as s:
        stored = (
            await s.execute(
                text("SELECT count(*), count(DISTINCT task_id) FROM stories WHERE job_id = :j"),
                {"j": uuid.UUID(job_id)},
            )
        ).one()
    assert tuple(stored) == (3, 3)


def test_error_bodies_of_other_servers_are_read() -> None:
    from generator.errors import error_message

    assert error_message({"error": {"message": "model x not found"}}, "HTTP 404") == (
        "model x not found"
    )
    assert error_message({"error": "model 'x' not found, try pulling it"}, "HTTP 404") == (
        "model 'x' not found, try pulling it"
    )  # Ollama, TGI
    assert error_message({"message": "The model `x` does not exist."}, "HTTP 404") == (
        "The model `x` does not exist."
    )  # older vLLM
    assert error_message({"detail": "Server is pinned to 'a'"}, "HTTP 400") == (
        "Server is pinned to 'a'"
    )  # FastAPI servers
    assert error_message("<html>bad gateway</html>", "HTTP 502") == "HTTP 502"
