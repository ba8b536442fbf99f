"""Batch API jobs end to end: the API, the worker's batch runner, the simulator's Batch API over
real HTTP with the real openai SDK; partial failures, dropped and malformed lines, a restart
between steps, a create whose answer was lost."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from sqlalchemy import text

from generator.simulator import SimulatorConfig, run_simulator
from generator.simulator.batch import BATCH_CONFIG_ENV
from service.work.wiring import run_worker, worker_config


@pytest.fixture
def batch_simulator(monkeypatch):
    """A simulator whose batches finish in moments, with 10% failed requests, 5% of lines
    dropped and 5% malformed."""

    def start(**overrides):
        config = {"completion_s": 0.3, "failure_rate": 0.1, "drop_rate": 0.05}
        config.update({"malformed_rate": 0.05, "seed": 3, **overrides})
        monkeypatch.setenv(BATCH_CONFIG_ENV, json.dumps(config))
        return run_simulator(SimulatorConfig(seed=2), subprocess_mode=True)

    return start


def _provider_batches(url: str) -> list[dict]:
    resp = httpx.get(f"{url}/batches", params={"limit": 100}, timeout=10)
    resp.raise_for_status()
    return resp.json()["data"]


async def test_auto_mode_weighs_the_deadline_and_the_saving(api) -> None:
    # 50 stories at $100/$400 per 1M tokens: up to 600 tokens out each, so the Batch API's
    # half price saves up to 50 x (0.24 + prompt) / 2 = $6.0-6.5.
    body = {"n_stories": 50, "budget_usd": 20.0, "mode": "auto"}
    dear = {**body, "price": {"input": 100.0, "output": 400.0}, "max_tokens": 600}
    soon = (await api.post("/v1/jobs", json={**dear, "deadline_hours": 2})).json()
    later = (await api.post("/v1/jobs", json=dear)).json()
    cheap = (await api.post("/v1/jobs", json={**body, "n_stories": 3})).json()
    assert (soon["mode"], later["mode"], cheap["mode"]) == ("online", "batch", "online")
    assert "shorter than the batch window" in soon["mode_reason"]
    saved = float(later["mode_reason"].rsplit("$", 1)[1])
    assert "no deadline" in later["mode_reason"] and 6.0 <= saved <= 6.5
    # The simulator's nominal price: 3 stories would save under a cent.
    assert "would save at most $0.00 on this job, under $1" in cheap["mode_reason"]
    bad = await api.post("/v1/jobs", json={**body, "mode": "offline"})
    assert bad.status_code == 422 and "mode" in bad.text


async def test_a_batch_job_stores_every_story_once_at_the_batch_price(
    api, settings, sessionmaker, batch_simulator
) -> None:
    with batch_simulator() as url:
        job = (
            await api.post(
                "/v1/jobs",
                json={"n_stories": 40, "budget_usd": 5.0, "mode": "batch", "instruct": True},
            )
        ).json()
        assert job["mode"] == "batch"
        s = settings.model_copy(
            update={"simulator_base_url": url, "batch_size": 25, "batch_poll_seconds": 0.2}
        )
        await run_worker(
            s,
            config=worker_config(s, idle_exit=True, concurrency=4, poll_s=0.05),
            install_signals=False,
        )
        provider = _provider_batches(url)
    job = (await api.get(f"/v1/jobs/{job['id']}")).json()
    assert job["status"] == "completed", job
    assert job["completed"] + job["rejected"] + job["failed"] == 40 and job["completed"] > 0
    summary = job["batches"]
    # 40 tasks in batches of <= 25; failed, dropped and malformed lines went to later batches.
    assert summary["batches"] >= 3 and summary["resubmitted_tasks"] > 0
    assert summary["batches"] == len(provider)
    assert summary["saved_usd"] == pytest.approx(summary["online_cost_usd"] / 2, rel=0.01)
    async with sessionmaker() as s:
        per_task = (
            await s.execute(
                text("SELECT count(*), count(DISTINCT task_id) FROM stories WHERE job_id = :j"),
                {"j": uuid.UUID(job["id"])},
            )
        ).one()
        story_cost, summaries = (
            await s.execute(
                text(
                    "SELECT sum(cost_usd) FILTER (WHERE kind = 'story'), "
                    "count(*) FILTER (WHERE kind = 'summary') FROM requests WHERE job_id = :j"
                ),
                {"j": uuid.UUID(job["id"])},
            )
        ).one()
        accepted = (
            await s.execute(
                text("SELECT count(*) FROM stories WHERE job_id = :j AND accepted"),
                {"j": uuid.UUID(job["id"])},
            )
        ).scalar_one()
    assert per_task[0] == per_task[1] == job["completed"] + job["rejected"]
    assert float(story_cost) == pytest.approx(summary["cost_usd"], rel=1e-6)
    assert summaries >= accepted  # Instruct summaries of accepted stories, online
    assert job["cost_usd"] >= summary["cost_usd"] and job["reserved_usd"] == 0
    metrics = (await api.get("/metrics")).text
    assert f'tinystories_batches{{state="done"}} {float(summary["batches"])}' in metrics
    assert "tinystories_batch_saved_usd " in metrics


async def test_a_restarted_runner_resumes_and_never_creates_a_batch_twice(
    api, settings, sessionmaker, batch_simulator
) -> None:
    from generator.batch import BatchClient
    from service.work.batch_clients import BatchClients
    from service.work.batches import METADATA_KEY, BatchRunner
    from service.work.task import StoryProcessor
    from service.work.wiring import EngineCache

    with batch_simulator(failure_rate=0.0, drop_rate=0.0, malformed_rate=0.0) as url:
        job = (
            await api.post("/v1/jobs", json={"n_stories": 12, "budget_usd": 5.0, "mode": "batch"})
        ).json()

        def runner(client: BatchClient) -> BatchRunner:
            from generator.checks import StoryChecker
            from generator.pricing import PriceTable
            from generator.retry import RetryPolicy
            from vocab import default_vocabulary

            engines = EngineCache(
                client=client,
                limiter=None,
                pricing=PriceTable.load(),
                retry=RetryPolicy(),
                checker=StoryChecker(default_vocabulary()),
            )
            return BatchRunner(
                sessionmaker=sessionmaker,
                processor=StoryProcessor(engines),
                clients=BatchClients(lambda: client),
                batch_size=6,
                poll_s=0.1,
            )

        async with BatchClient(base_url=url, api_key="k", provider="simulator") as client:
            first = runner(client)
            await first.build()  # two batches of 6, leased and reserved
            await first.build()
            async with sessionmaker() as s:
                ids = (await s.execute(text("SELECT id FROM provider_batches ORDER BY id"))).all()
            assert len(ids) == 2
            await first.advance(ids[0][0])  # uploaded
            await first.advance(ids[1][0])
            # The first batch's create reaches the provider, then the process dies before its
            # answer is stored: only create_sent_at says so.
            async with sessionmaker() as s, s.begin():
                row = (
                    await s.execute(
                        text(
                            "UPDATE provider_batches SET create_sent_at = now() WHERE id = :id "
                            "RETURNING key, input_file_id"
                        ),
                        {"id": ids[0][0]},
                    )
                ).one()
            await client.create(row.input_file_id, metadata={METADATA_KEY: str(row.key)})

            second = runner(client)  # a fresh process takes over
            for _ in range(400):
                async with sessionmaker() as s:
                    left = (
                        await s.execute(
                            text("SELECT count(*) FROM provider_batches WHERE state <> 'done'")
                        )
                    ).scalar_one()
                if not left:
                    break
                await second.step()
            assert left == 0
        assert len(_provider_batches(url)) == 2
    job = (await api.get(f"/v1/jobs/{job['id']}")).json()
    assert job["completed"] + job["rejected"] == 12 and job["status"] == "completed"
