"""Batch API benchmark: the same job through the Batch API and online, cost counted at the provider.

Against the simulator (its batches finish in seconds instead of hours), in one run:

- a batch job of N stories, worked by one worker process that is killed with SIGKILL once a
  batch is in flight at the provider, then by a fresh worker that must resume it (poll the
  submitted batches, never create one twice) and finish the job;
- the same job online (same seed, same model), by worker processes pointed at a counting proxy
  in front of a second simulator.

Cost is counted at the provider: the batch simulator's billed tokens (its own counters) at the
batch price, the proxy's billed tokens at the online price, each divided by the stories the
job stored. lost: tasks neither stored nor failed when the job ended; duplicated: stories
stored twice for one task; resumed_after_kill: the killed worker's batches finished under the
new worker and the provider holds exactly as many batches as the store.

Last line: `batch: stories=N cost_ratio_vs_online=X duplicated=0 lost=0 resumed_after_kill=true`.
Target: cost ratio <= 0.51.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

import httpx
from bench_chaos import proxy_stats, query
from service_procs import TOKEN, base_env, free_port, spawn, stop

MODEL = "simulator-story-1"


def wait_progress(what: str, done, value, stall_s: float = 120.0) -> None:
    """Wait until done(); fail only when value() stops moving for stall_s."""
    last, moved = None, time.monotonic()
    while not done():
        now = value()
        if now != last:
            last, moved = now, time.monotonic()
        if time.monotonic() - moved > stall_s:
            raise SystemExit(f"{what}: no progress for {stall_s:.0f} s (at {now})")
        time.sleep(0.3)


def job_row(url: str, job_id: str) -> tuple:
    return query(
        url,
        "SELECT status, completed, rejected, failed, n_stories FROM jobs WHERE id = %s",
        job_id,
    )[0]


def stored(url: str, job_id: str) -> tuple[int, int]:
    return query(
        url, "SELECT count(*), count(DISTINCT task_id) FROM stories WHERE job_id = %s", job_id
    )[0]


def billed_usd(billed: dict, *, batch: bool) -> Decimal:
    from generator.pricing import PriceTable

    prices = PriceTable.load()
    return sum(
        (
            Decimal(
                repr(
                    prices.cost(
                        m,
                        row["prompt"],
                        row["completion"],
                        batch=batch,
                        cached_tokens=row.get("cached", 0),
                    )
                )
            )
            for m, row in billed.items()
        ),
        Decimal(0),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 stories instead of 20,000")
    ap.add_argument("--stories", type=int, default=None)
    args = ap.parse_args()
    n = args.stories or (2_000 if args.quick else 20_000)

    from generator.simulator import SimulatorConfig, run_simulator
    from generator.simulator.batch import BATCH_CONFIG_ENV
    from service.migrate import upgrade
    from service.pgserver import EmbeddedPostgres, embedded_url

    root = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    server = EmbeddedPostgres(root / "pg")
    procs: list[subprocess.Popen] = []
    started = time.monotonic()
    try:
        url = embedded_url(root / "pg")
        upgrade(url)
        # A batch takes a few seconds per 1,000 requests here; a real provider takes hours.
        os.environ[BATCH_CONFIG_ENV] = json.dumps({"completion_s": max(3.0, n / 1000)})
        with (
            run_simulator(SimulatorConfig(seed=1), subprocess_mode=True) as batch_sim,
            run_simulator(SimulatorConfig(seed=1), subprocess_mode=True) as online_sim,
        ):
            port = free_port()
            proxy = subprocess.Popen(
                [
                    sys.executable,
                    str(Path(__file__).with_name("bench_chaos.py")),
                    "--proxy",
                    online_sim,
                    str(port),
                ],
                stdout=subprocess.DEVNULL,
                stderr=(root / "proxy.log").open("wb"),
            )
            procs.append(proxy)
            proxy_url = f"http://127.0.0.1:{port}"
            wait_progress("proxy", lambda: _up(proxy_url), lambda: 0, stall_s=60)

            api_port = free_port()
            env = base_env(url, root / "home", batch_sim, TINYSTORIES_PORT=str(api_port))
            env.update(
                TINYSTORIES_BATCH_SIZE=str(max(500, n // 4)),
                TINYSTORIES_BATCH_POLL_SECONDS="1",
                TINYSTORIES_LOG_LEVEL="INFO",
            )
            api = spawn(["serve"], env, root / "api.log")
            procs.append(api)
            http = httpx.Client(
                base_url=f"http://127.0.0.1:{api_port}",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=60,
            )
            wait_progress("API", lambda: _up(str(http.base_url), "/healthz"), lambda: 0, 120)
            body = {"n_stories": n, "budget_usd": 1000, "model": MODEL, "seed": 7}
            batch_job = http.post("/v1/jobs", json={**body, "mode": "batch"}).json()["id"]

            # Batch job: one worker, killed once a batch is at the provider; a fresh one resumes.
            first = spawn(["worker"], env, root / "worker-batch-1.log")
            procs.append(first)
            wait_progress(
                "first batch submitted",
                lambda: (
                    query(url, "SELECT count(*) FROM provider_batches WHERE state = 'submitted'")[
                        0
                    ][0]
                    > 0
                ),
                lambda: query(url, "SELECT count(*), max(state) FROM provider_batches")[0],
            )
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            in_flight = query(url, "SELECT count(*) FROM provider_batches WHERE state <> 'done'")
            print(f"killed the batch worker with {in_flight[0][0]} batch(es) open", flush=True)
            second = spawn(["worker"], env, root / "worker-batch-2.log")
            procs.append(second)
            wait_progress(
                "batch job",
                lambda: job_row(url, batch_job)[0] not in ("queued", "running"),
                lambda: job_row(url, batch_job),
                stall_s=max(120.0, n / 50),
            )
            batch_done = time.monotonic()
            stop([second])
            batch_stats = httpx.get(
                batch_sim.removesuffix("/v1") + "/v1/simulator/batch_stats", timeout=30
            ).json()
            provider_batches = sum(batch_stats["batches"].values())
            ours = query(url, "SELECT count(*) FROM provider_batches")[0][0]

            # The same job online, through the counting proxy.
            online_env = {**env, "TINYSTORIES_SIMULATOR_BASE_URL": f"{proxy_url}/v1"}
            online_job = http.post("/v1/jobs", json=body).json()["id"]
            workers = [
                spawn(["worker"], online_env, root / f"worker-online-{i}.log") for i in range(2)
            ]
            procs += workers
            wait_progress(
                "online job",
                lambda: job_row(url, online_job)[0] not in ("queued", "running"),
                lambda: job_row(url, online_job),
            )
            online_done = time.monotonic()
            stop(workers)
            online_billed = proxy_stats(proxy_url)["billed"]

        rows = {}
        for name, job_id in (("batch", batch_job), ("online", online_job)):
            status, completed, rejected, failed, total = job_row(url, job_id)
            count, distinct = stored(url, job_id)
            rows[name] = {
                "status": status,
                "stored": count,
                "lost": total - completed - rejected - failed,
                "duplicated": count - distinct,
            }
        batch_usd = billed_usd(batch_stats["billed"], batch=True)
        online_usd = billed_usd(online_billed, batch=False)
        per_batch = batch_usd / max(rows["batch"]["stored"], 1)
        per_online = online_usd / max(rows["online"]["stored"], 1)
        ratio = per_batch / per_online if per_online else Decimal("nan")
        resumed = rows["batch"]["status"] == "completed" and provider_batches == ours
        print(
            f"batch job: {rows['batch']}, provider billed ${batch_usd:.6f} for "
            f"{rows['batch']['stored']} stories, {provider_batches} batches at the provider, "
            f"{ours} in the store, {batch_done - started:.0f} s"
        )
        print(
            f"online job: {rows['online']}, provider billed ${online_usd:.6f}, "
            f"{online_done - batch_done:.0f} s"
        )
        print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
        print(
            f"batch: stories={rows['batch']['stored']} cost_ratio_vs_online={ratio:.3f} "
            f"duplicated={rows['batch']['duplicated'] + rows['online']['duplicated']} "
            f"lost={rows['batch']['lost'] + rows['online']['lost']} "
            f"resumed_after_kill={str(resumed).lower()}"
        )
    finally:
        stop(procs)
        server.stop()


def _up(base: str, path: str = "/proxy/stats") -> bool:
    try:
        return httpx.get(base.rstrip("/") + path, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
