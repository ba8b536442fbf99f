"""Worker start-up benchmark: seconds from `tinystories worker` to its first claimed task.

A worker restarted every few seconds (a crash loop, a rolling deploy, an autoscaler) must get
to work quickly. Measured here: a fresh `python -m service worker` process, pointed at an
already running simulator (as it would be at a real provider), against a migrated embedded
Postgres holding one pending job; the clock stops when the task table shows the first task
claimed by that process. Baseline in the same run: the floor any Python worker pays, a bare
interpreter that connects with psycopg and claims one task with the same kind of statement.
Each is run `--runs` times (median).

Last line: `startup: worker_first_claim_s=X floor_s=Y ratio_vs_floor=Z`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

FLOOR = """
import sys, psycopg
with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    conn.execute(
        "UPDATE tasks SET status = 'running', updated_at = now() WHERE id = (SELECT id FROM tasks "
        "WHERE status = 'pending' ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)"
    )
"""


async def seed_job(url: str, n: int) -> None:
    from service import store
    from service.db import make_engine, make_sessionmaker
    from service.store.jobs import TaskSpec

    engine = make_engine(url, pool_size=1)
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as s, s.begin():
        await store.create_job(
            session=s,
            job_id=uuid.uuid4(),
            fields={
                "n_stories": n,
                "models": [{"model": "simulator-story-1", "weight": 1.0}],
                "template_version": "v1",
                "max_tokens": 300,
                "seed": 0,
                "budget_usd": Decimal("100"),
                "priority": 0,
                "provider": "simulator",
            },
            tasks=[
                TaskSpec(
                    index=i,
                    recipe={"verb": "run", "noun": "dog", "adjective": "big", "features": []},
                    model="simulator-story-1",
                )
                for i in range(n)
            ],
        )
    await engine.dispose()


def claimed(libpq: str, since: float) -> bool:
    import psycopg

    with psycopg.connect(libpq, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM tasks WHERE status <> 'pending' AND "
            "updated_at >= to_timestamp(%s)",
            (since,),
        ).fetchone()
    return bool(row and row[0])


def reset(libpq: str) -> None:
    import psycopg

    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute(
            "UPDATE tasks SET status = 'pending', lease_owner = NULL, lease_expires_at = NULL, "
            "attempts = 0, reserved_usd = 0"
        )


def worker_first_claim(url: str, libpq: str, sim_url: str, home: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env.update(
        DATABASE_URL=url,
        TINYSTORIES_HOME=str(home),
        TINYSTORIES_SIMULATOR_BASE_URL=sim_url,
        TINYSTORIES_LOG_LEVEL="WARNING",
    )
    reset(libpq)
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while not claimed(libpq, started):
            if proc.poll() is not None:
                raise SystemExit(f"worker exited with {proc.returncode} before claiming")
            if time.time() - started > 120:
                raise SystemExit("worker claimed nothing in 120 s")
            time.sleep(0.02)
        return time.time() - started
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def floor(libpq: str) -> float:
    reset(libpq)
    started = time.time()
    subprocess.run([sys.executable, "-c", FLOOR, libpq], check=True)
    return time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 runs instead of 7")
    parser.add_argument("--runs", type=int, default=None)
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 7)

    from generator.simulator import SimulatorConfig, run_simulator
    from service.migrate import upgrade
    from service.pgserver import EmbeddedPostgres, ensure_database

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        pg = EmbeddedPostgres(home / "pg")
        info = pg.ensure_running()
        try:
            ensure_database(info.url(driver="postgresql"), "bench")
            url = info.url("bench")
            libpq = url.replace("postgresql+psycopg://", "postgresql://", 1)
            upgrade(url)
            asyncio.run(seed_job(url, 2_000))
            with run_simulator(SimulatorConfig(), subprocess_mode=True) as sim_url:
                ours = [worker_first_claim(url, libpq, sim_url, home) for _ in range(runs)]
            base = [floor(libpq) for _ in range(runs)]
        finally:
            pg.stop()
    o, b = statistics.median(ours), statistics.median(base)
    print(f"worker first claim, s: {', '.join(f'{x:.2f}' for x in ours)}")
    print(f"floor (python + psycopg claim), s: {', '.join(f'{x:.2f}' for x in base)}")
    print(f"startup: worker_first_claim_s={o:.2f} floor_s={b:.2f} ratio_vs_floor={o / b:.1f}")


if __name__ == "__main__":
    main()
