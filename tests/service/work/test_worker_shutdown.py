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
            database_url, sim_url, tmp_path / "home", TINYSTORIES_SHUTDOWN_GRACE_SECONDS="2"
        )
        log = tmp_path / "w.log"
        proc = start_worker(env, log, concurrency=8)
        try:
            states, owners, job, worker, took = await _sigterm_when_busy(proc, database_url, job_id)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert took < 10
    assert "running" not in states and owners == 0
    assert states["pending"] >= 32
    assert job == (0, "running")
    assert worker == ("stopped",)
    assert "released tasks" in log.read_text()


async def _sigterm_when_busy(proc, database_url: str, job_id: str) -> tuple:
    """SIGTERM once 8 tasks run; what the store says after the worker exits."""
    with psycopg.connect(libpq(database_url), autocommit=True) as conn:
        running = 0
        while running < 8 and proc.poll() is None:  # the worker's start-up sets the pace
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
        took = time.monotonic() - start
        states = dict(conn.execute("SELECT status, count(*) FROM tasks GROUP BY status").fetchall())
        owners = conn.execute(
            "SELECT count(*) FROM tasks WHERE lease_owner IS NOT NULL"
        ).fetchone()[0]
        job = conn.execute(
            "SELECT reserved_usd, status FROM jobs WHERE id = %s", (job_id,)
        ).fetchone()
        worker = conn.execute("SELECT status FROM workers").fetchone()
    return states, owners, job, worker, took


async def test_sigterm_ends_the_worker_within_its_grace_even_with_the_database_gone(
    tmp_path: Path,
) -> None:
    from generator.simulator import SimulatorConfig, run_simulator
    from service.db import make_engine, make_sessionmaker
    from service.migrate import upgrade
    from service.pgserver import ensure_database
    from tests.service.conftest import embedded_server
    from tests.service.work.test_spend import make_job

    grace_s = 3.0
    with embedded_server() as (server, info):  # its own server: this test stops it
        ensure_database(info.url(driver="postgresql"), "gone")
        url = info.url("gone")
        upgrade(url)
        engine = make_engine(url, pool_size=2)
        await make_job(make_sessionmaker(engine), 40)
        await engine.dispose()
        config = SimulatorConfig(latency_median_s=3.0, latency_p99_s=3.5, seed=2)
        with run_simulator(config, subprocess_mode=True) as sim_url:
            env = worker_env(
                url,
                sim_url,
                tmp_path / "home",
                TINYSTORIES_SHUTDOWN_GRACE_SECONDS=str(grace_s),
            )
            log = tmp_path / "w.log"
            proc = start_worker(env, log, concurrency=8)
            try:
                with psycopg.connect(libpq(url), autocommit=True) as conn:
                    running = 0
                    while running < 8 and proc.poll() is None:
                        running = conn.execute(
                            "SELECT count(*) FROM tasks WHERE status = 'running'"
                        ).fetchone()[0]
                        await asyncio.sleep(0.1)
                assert running == 8
                server.stop(mode="immediate")
                start = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                # Within the grace period, plus the time a loaded machine takes to exit Python.
                assert proc.wait(grace_s + 15) == 0
                took = time.monotonic() - start
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    text = log.read_text()
    assert "worker stop cut short" in text and "Traceback" not in text, text[-3000:]
    assert took < grace_s + 15
