"""What the per-minute rollups cost the workers: the same job made with the workers' rollup
writes on and off (TINYSTORIES_ROLLUPS), alternating, on one API, database and simulator.

Each round starts two fresh worker processes with the setting, waits until they are up, then
submits a job of n stories and times it from the submit until its last story is stored and
checked for near-duplicates, after an untimed 200-story warm-up job (start-up is the same
for both settings). Also the CPU per story of the workers and Postgres (less noisy than the
wall clock on a shared machine).
Rollups are where finishing transactions meet (one row per minute, model and job), so this
is where their write cost shows.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from service_procs import (
    Service,
    cpu_s,
    listener_pid,
    load_avg,
    start_simulators,
    stop,
    tree_cpu_s,
    wait_for,
    watch_job,
)

MODEL = "simulator-story-1"


def check_rollups(url: str, job_id: str, expected: bool) -> None:
    """The job has rollup rows exactly when the workers were told to write them."""
    import psycopg

    from service.store.exports import libpq_url

    with psycopg.connect(libpq_url(url)) as conn:
        rows = conn.execute(
            "SELECT count(*) FROM rollups_minute WHERE job_id = %s", (job_id,)
        ).fetchone()[0]
    if bool(rows) != expected:
        raise SystemExit(f"TINYSTORIES_ROLLUPS={expected} but the job has {rows} rollup rows")


def measure_rollup_cost(n: int, rounds: int, workers: int = 2) -> dict[str, float]:
    """stories/s with rollups on and off (medians over `rounds` each) and their ratio."""
    from generator.simulator import SimulatorConfig
    from service.migrate import upgrade
    from service.pgserver import EmbeddedPostgres, embedded_url

    root = Path(tempfile.mkdtemp(prefix="bench-rollups-"))
    server = EmbeddedPostgres(root / "pg")
    rates: dict[bool, list[float]] = {True: [], False: []}
    cpus: dict[bool, list[float]] = {True: [], False: []}
    try:
        with ExitStack() as stack:
            (sim_url,), sims = start_simulators([SimulatorConfig(seed=1)])
            stack.enter_context(sims)
            sim_pid = listener_pid(sim_url)
            stack.callback(os.kill, sim_pid, signal.SIGKILL)
            url = embedded_url(root / "pg")
            upgrade(url)
            svc = Service(url, root, sim_url, MODEL)
            stack.callback(svc.close)
            wait_for(svc.healthy, 120, "the API")
            info = server.running()
            if info is None:
                raise SystemExit("the embedded Postgres is not running")
            pg_pid = info.pid
            for r in range(rounds):
                for rollups in (True, False) if r % 2 == 0 else (False, True):
                    procs = svc.workers(
                        workers, concurrency=64, TINYSTORIES_ROLLUPS=str(rollups).lower()
                    )
                    try:
                        wait_for(lambda p=procs: all(map(Service.started, p)), 120, "workers")
                        # Untimed warm-up job: first-story imports, pools, the checker's tables.
                        start = time.monotonic()
                        watch_job(url, svc.submit(200, seed=9000 + 2 * r + rollups), start)
                        cpu0 = sum(cpu_s(p.pid) for p in procs) + tree_cpu_s(pg_pid)
                        start = time.monotonic()
                        job_id = svc.submit(n, seed=100 + 2 * r + rollups)
                        got = watch_job(url, job_id, start)
                        cpu = sum(cpu_s(p.pid) for p in procs) + tree_cpu_s(pg_pid) - cpu0
                        check_rollups(url, job_id, rollups)
                    finally:
                        stop(procs, timeout=10)
                    rates[rollups].append(got["made"] / got["checked_s"])
                    cpus[rollups].append(cpu * 1000 / got["made"])
                    print(
                        f"  rollups={'on' if rollups else 'off'} stories={got['made']:.0f} "
                        f"stories_per_s={rates[rollups][-1]:.1f} "
                        f"cpu_ms_per_story={cpus[rollups][-1]:.2f} (workers + Postgres) "
                        f"load={load_avg()}",
                        flush=True,
                    )
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    cpu_on, cpu_off = statistics.median(cpus[True]), statistics.median(cpus[False])
    return {
        "rollup_cost_ratio": on / off,
        "rollups_on_per_s": on,
        "rollups_off_per_s": off,
        # CPU per story does not depend on what else the machine runs; wall-clock rates do.
        "rollup_cpu_ratio": cpu_on / cpu_off,
    }
