"""SIGTERM: the worker stops claiming, gives in-flight work a deadline, releases the rest."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import psycopg

from tests.service.reliability import libpq, start_worker, worker_env


async def test_sigterm_releases_unfinished_tasks(api, database_url: str, tmp_path: Path) -> None:
    from generator.simulator import SimulatorConfig, run_simulator

    resp = await api.post("/v1/jobs", json={"n_stories": 40, "budget_usd": 1.0})
    job_id = resp.json()["id"]
    config = SimulatorConfig(latency_median_s=3.0, latency_p99_s=3.5, seed=2)
    with run_simulator(config, subprocess_mode=True) as sim_url:
        env = worker_env(
            database_url, sim_url, tmp_path / "home", TINYSTORIES_SHUTDOWN_GRACE_SECONDS="0.5"
        )
        log = tmp_path / "w.log"
        proc = start_worker(env, log, concurrency=8)
        with psycopg.connect(libpq(database_url), autocommit=True) as conn:
            deadline = time.monotonic() + 60
            running = 0
            while time.monotonic() < deadline and running < 8:
                running = conn.execute(
                    "SELECT count(*) FROM tasks WHERE status = 'running'"
                ).fetchone()[0]
                await asyncio.sleep(0.1)
            assert running == 8
            reserved = conn.execute("SELECT reserved_usd FROM jobs").fetchone()[0]
            assert reserved > 0
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            assert time.monotonic() - start < 10
            states = dict(
                conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall()
            )
            owners = conn.execute(
                "SELECT count(*) FROM tasks WHERE lease_owner IS NOT NULL"
            ).fetchone()[0]
            job = conn.execute(
                "SELECT reserved_usd, status FROM jobs WHERE id = %s", (job_id,)
            ).fetchone()
            worker = conn.execute("SELECT status FROM workers").fetchone()
    assert "running" not in states and owners == 0
    assert states["pending"] >= 32
    assert job == (0, "running")
    assert worker == ("stopped",)
    assert "released tasks" in log.read_text()
