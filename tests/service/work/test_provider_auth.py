"""A provider that refuses the key: the job pauses with a clear reason instead of retrying
every task; provider error text is stored without anything key-like."""

from __future__ import annotations

from sqlalchemy import text

from service.work.task import DedupStoryProcessor
from service.work.wiring import run_worker, worker_config

MODEL = "simulator-story-1"


async def test_rejected_key_pauses_the_job_after_one_call_per_task(
    api, settings, sessionmaker
) -> None:
    from generator.simulator import SimulatorConfig, run_simulator

    resp = await api.post(
        "/v1/jobs", json={"n_stories": 50, "model": MODEL, "seed": 1, "budget_usd": 1.0}
    )
    job_id = resp.json()["id"]
    # The simulator wants another key than the one the worker sends: every call is a 401.
    with run_simulator(SimulatorConfig(api_key="the-right-key")) as url:
        s = settings.model_copy(update={"simulator_base_url": url})
        await run_worker(
            s,
            config=worker_config(s, idle_exit=True, concurrency=4, claim_batch=4, poll_s=0.05),
            install_signals=False,
        )
    job = (await api.get(f"/v1/jobs/{job_id}")).json()
    assert job["status"] == "paused"
    assert "refused the API key" in job["last_error"] and "resume" in job["last_error"]
    async with sessionmaker() as session:
        tasks = dict(
            (
                await session.execute(
                    text("SELECT status, count(*) FROM tasks WHERE job_id = :j GROUP BY 1"),
                    {"j": job_id},
                )
            ).all()
        )
        attempts = (await session.execute(text("SELECT max(attempts) FROM tasks"))).scalar_one()
    # One call per task in flight when the first 401 came back, none retried, none failed.
    assert job["n_requests"] <= 8 and tasks == {"pending": 50} and attempts == 0


async def test_an_account_out_of_credit_pauses_the_job_saying_so(api, settings) -> None:
    from generator.simulator import SimulatorConfig, run_simulator

    resp = await api.post(
        "/v1/jobs", json={"n_stories": 20, "model": MODEL, "seed": 1, "budget_usd": 1.0}
    )
    job_id = resp.json()["id"]
    # Every call: OpenAI's 429 insufficient_quota, which no retry or wait can fix.
    with run_simulator(SimulatorConfig(rate_insufficient_quota=1.0)) as url:
        s = settings.model_copy(update={"simulator_base_url": url})
        await run_worker(
            s,
            config=worker_config(s, idle_exit=True, concurrency=4, claim_batch=4, poll_s=0.05),
            install_signals=False,
        )
    job = (await api.get(f"/v1/jobs/{job_id}")).json()
    assert job["status"] == "paused" and job["failed"] == 0
    assert "out of credit" in job["last_error"] and "resume" in job["last_error"]
    assert job["n_requests"] <= 8  # one call per task in flight, none retried


class LeakyProcessor(DedupStoryProcessor):
    """A processor whose failure message echoes a credential, as some providers do."""

    async def process(self, task, max_tokens=None):
        raise RuntimeError(
            "Incorrect API key provided: sk-proj-abcdefghijklmnop1234567890 "
            "(Authorization: Bearer sk-proj-abcdefghijklmnop1234567890)"
        )


async def test_error_text_is_stored_redacted(api, settings, simulator_url, sessionmaker) -> None:
    resp = await api.post(
        "/v1/jobs", json={"n_stories": 2, "model": MODEL, "seed": 1, "budget_usd": 1.0}
    )
    job_id = resp.json()["id"]
    s = settings.model_copy(update={"simulator_base_url": simulator_url, "max_attempts": 1})
    await run_worker(
        s,
        config=worker_config(s, idle_exit=True, concurrency=2, poll_s=0.05),
        processor_factory=LeakyProcessor,
        install_signals=False,
    )
    async with sessionmaker() as session:
        errors = (
            (
                await session.execute(
                    text(
                        "SELECT last_error FROM tasks WHERE job_id = :j "
                        "UNION ALL SELECT last_error FROM jobs WHERE id = :j"
                    ),
                    {"j": job_id},
                )
            )
            .scalars()
            .all()
        )
    assert len(errors) == 3 and all(e and "Incorrect API key" in e for e in errors)
    assert not any("abcdefghijklmnop" in e for e in errors), errors
