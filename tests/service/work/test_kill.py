"""Kill test: three workers, SIGKILL one every ~2 s and restart it; nothing lost or doubled."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import httpx

from tests.service.reliability import (
    assert_job_consistent,
    job_row,
    start_worker,
    stop_all,
    worker_env,
)

N_STORIES = 2000  # as the reliability requirement states
KILL_FOR_S = 45.0  # then the survivors finish the job
STALL_S = 90.0  # the test fails when no story ends for this long


def _is_up(log: Path, since: int) -> bool:
    """The worker whose output starts at byte `since` of `log` is claiming work."""
    with open(log, "rb") as handle:
        handle.seek(since)
        return b"worker started" in handle.read()


async def test_sigkill_workers_lose_and_double_nothing(
    api: httpx.AsyncClient, database_url: str, tmp_path: Path
) -> None:
    from generator.simulator import SimulatorConfig, run_simulator

    config = SimulatorConfig(rate_429=0.10, rate_500=0.05, latency_median_s=0.1, seed=7)
    resp = await api.post("/v1/jobs", json={"n_stories": N_STORIES, "budget_usd": 1.0, "seed": 11})
    job_id = resp.json()["id"]
    rng = random.Random(5)
    logs = [tmp_path / f"w{i}.log" for i in range(3)]
    with run_simulator(config, subprocess_mode=True) as sim_url:
        env = worker_env(database_url, sim_url, tmp_path / "home")
        procs = [start_worker(env, log, concurrency=20) for log in logs]
        offsets = [0, 0, 0]
        kills = 0
        start = time.monotonic()
        progress, last_change = -1, time.monotonic()
        try:
            while True:
                await asyncio.sleep(rng.uniform(1.5, 2.5))
                job = job_row(database_url, job_id)
                assert job["spent_usd"] + job["reserved_usd"] <= job["budget_usd"]
                if job["status"] not in ("queued", "running"):
                    break
                # Deadlines follow progress: fail only when the job stops moving.
                done = job["completed"] + job["rejected"] + job["failed"]
                if done != progress:
                    progress, last_change = done, time.monotonic()
                assert time.monotonic() - last_change < STALL_S, f"no progress for {STALL_S}s"
                if time.monotonic() - start > KILL_FOR_S:
                    continue
                # A worker still importing would die having done nothing: pick a working one.
                up = [i for i in range(3) if _is_up(logs[i], offsets[i])]
                if not up:
                    continue
                victim = rng.choice(up)
                procs[victim].kill()
                procs[victim].wait()
                kills += 1
                offsets[victim] = logs[victim].stat().st_size
                procs[victim] = start_worker(env, logs[victim], concurrency=20)
        finally:
            stop_all(procs)
    try:
        job = assert_job_consistent(database_url, job_id)
    except AssertionError:
        print("\n".join(log.read_text()[-2000:] for log in logs))
        raise
    assert kills >= 5, f"only {kills} kills before the job finished"
    assert job["completed"] > N_STORIES * 0.8
