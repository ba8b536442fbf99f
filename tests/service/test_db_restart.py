"""Database restart: stop Postgres in the middle of a job; workers reconnect, nothing is lost."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from service.migrate import upgrade
from service.pgserver import ensure_database
from tests.service.conftest import TEST_TOKEN, embedded_server
from tests.service.reliability import (
    assert_job_consistent,
    job_row,
    start_worker,
    stop_all,
    worker_env,
)


async def test_workers_survive_a_postgres_restart(tmp_path: Path, settings) -> None:
    from generator.simulator import SimulatorConfig, run_simulator
    from service.api import create_app

    with embedded_server() as (server, info):
        ensure_database(info.url(driver="postgresql"), "restart")
        url = info.url("restart")
        upgrade(url)
        app = create_app(settings.model_copy(update={"database_url": url}))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport,
                base_url="http://t",
                headers={"Authorization": f"Bearer {TEST_TOKEN}"},
            ) as api:
                resp = await api.post(
                    "/v1/jobs", json={"n_stories": 300, "budget_usd": 1.0, "seed": 4}
                )
                job_id = resp.json()["id"]
                config = SimulatorConfig(latency_median_s=0.05, seed=3)
                with run_simulator(config, subprocess_mode=True) as sim_url:
                    env = worker_env(url, sim_url, tmp_path / "home")
                    logs = [tmp_path / f"w{i}.log" for i in range(2)]
                    procs = [start_worker(env, log, concurrency=10) for log in logs]
                    try:
                        deadline = time.monotonic() + 60
                        while time.monotonic() < deadline:
                            row = job_row(url, job_id)
                            if row["completed"] + row["rejected"] >= 40:
                                break
                            await asyncio.sleep(0.3)
                        before = row["completed"] + row["rejected"]
                        assert before < 300, "job finished before the restart"
                        assert server.stop(mode="fast")
                        await asyncio.sleep(3.0)
                        again = server.ensure_running()
                        assert again.port == info.port
                        deadline = time.monotonic() + 90
                        while time.monotonic() < deadline:
                            row = job_row(url, job_id)
                            if row["status"] not in ("queued", "running"):
                                break
                            await asyncio.sleep(0.5)
                    finally:
                        stop_all(procs)
                    text = "\n".join(log.read_text() for log in logs)
                assert "database unavailable" in text
                job = assert_job_consistent(url, job_id)
                assert job["completed"] + job["rejected"] + job["failed"] == 300
                shown = (await api.get(f"/v1/jobs/{job_id}")).json()
                assert shown["status"] == "completed"
