"""Job submission benchmark: seconds and API memory to queue jobs of every allowed size.

A user submits a paper-sized job (the default maximum, 1,000,000 stories) with one POST. The
API must answer in a few seconds, without growing, and keep answering other requests while
it does. Measured here against a migrated embedded Postgres and a real `python -m service
serve` process: `POST /v1/jobs` for 1,000, 100,000 and 1,000,000 stories (wall time at the
client, the API's RSS before and after), and the slowest `GET /v1/jobs` answered while the
largest submission runs. Baseline in the same run: the eager design a competent implementation
starts from, the job row plus all its task rows in one `INSERT ... SELECT generate_series`
sent straight through psycopg (no HTTP, no validation: its floor). Our tasks are made by the
claims that need them, so the cost moves to the workers: the same run times claiming the
first 20,000 tasks of the largest job in claims of 32 against the same claims on the eager
job's rows.

Last line: `submit: n=N submit_s=X eager_floor_s=Y speedup=Z api_rss_growth_mb=M get_max_ms=G
claim_per_s=C eager_claim_per_s=E`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil
from service_procs import TOKEN, base_env, free_port, spawn, stop, wait_for


def floor_s(libpq: str, n: int, job_id: uuid.UUID) -> float:
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(libpq) as conn:
        conn.execute(
            "INSERT INTO jobs (id, n_stories, tasks_made, models, template_version, max_tokens, "
            "seed, budget_usd, provider, status) VALUES (%s, %s, %s, "
            """'[{"model": "simulator-story-1", "weight": 1}]', 'v1', 300, 0, 1000, """
            "'simulator', 'paused')",
            (job_id, n, n),
        )
        conn.execute(
            "INSERT INTO tasks (job_id, index) SELECT %s, i FROM generate_series(0, %s - 1) i",
            (job_id, n),
        )
    return time.perf_counter() - started


async def claims_per_s(url: str, libpq: str, run: uuid.UUID, hold: uuid.UUID, n: int) -> float:
    """Tasks claimed per second, 32 at a time, with only job `run` runnable (`hold` paused)."""
    import psycopg

    from service import store
    from service.db import make_engine, make_sessionmaker

    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute("UPDATE jobs SET status = 'paused' WHERE id = %s", (hold,))
        conn.execute("UPDATE jobs SET status = 'queued' WHERE id = %s", (run,))
    engine = make_engine(url, pool_size=1)
    sessionmaker = make_sessionmaker(engine)
    got = 0
    started = time.perf_counter()
    while got < n:
        async with sessionmaker() as s, s.begin():
            got += len(await store.claim_tasks(session=s, worker_id="b", limit=32, lease_s=600))
    took = time.perf_counter() - started
    await engine.dispose()
    return got / took


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def submit(http: httpx.Client, n: int) -> tuple[float, uuid.UUID]:
    started = time.perf_counter()
    resp = http.post("/v1/jobs", json={"n_stories": n, "budget_usd": 1000, "seed": n})
    took = time.perf_counter() - started
    if resp.status_code != 201:
        raise SystemExit(f"submit of {n} answered {resp.status_code}: {resp.text[:300]}")
    http.post(f"/v1/jobs/{resp.json()['id']}/pause").raise_for_status()
    return took, uuid.UUID(resp.json()["id"])


def slowest_get_while(http: httpx.Client, busy: threading.Event) -> list[float]:
    """GET /v1/jobs in a loop while `busy` is set; the latencies in ms."""
    seen: list[float] = []
    while busy.is_set():
        started = time.perf_counter()
        http.get("/v1/jobs", params={"limit": 5}).raise_for_status()
        seen.append((time.perf_counter() - started) * 1000)
        time.sleep(0.05)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="largest job 100,000 stories")
    args = parser.parse_args()
    sizes = [1_000, 100_000] if args.quick else [1_000, 100_000, 1_000_000]

    from service.migrate import upgrade
    from service.pgserver import EmbeddedPostgres, embedded_url

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        pg = EmbeddedPostgres(home / "pg")
        pg.ensure_running()
        procs = []
        try:
            url = embedded_url(home / "pg")
            libpq = url.replace("postgresql+psycopg://", "postgresql://", 1)
            upgrade(url)
            port = free_port()
            env = base_env(url, home, "http://127.0.0.1:9", TINYSTORIES_PORT=str(port))
            env["TINYSTORIES_LOG_LEVEL"] = "WARNING"
            api = spawn(["serve"], env, home / "api.log")
            procs.append(api)
            http = httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=600,
            )
            probe = httpx.Client(base_url=http.base_url, headers=http.headers, timeout=600)

            def healthy() -> bool:
                try:
                    return http.get("/healthz").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_for(healthy, 120, "the API")
            # The first request pays imports and the connection pool.
            http.post("/v1/jobs", json={"n_stories": 1, "budget_usd": 1}).raise_for_status()
            base_rss = rss_mb(api.pid)
            rows = []
            gets: list[float] = []
            for n in sizes:
                busy = threading.Event()
                busy.set()
                result: list[list[float]] = []
                watcher = threading.Thread(
                    target=lambda out=result, flag=busy: out.append(slowest_get_while(probe, flag))
                )
                watcher.start()
                took, ours = submit(http, n)
                busy.clear()
                watcher.join()
                gets = result[0]
                eager = uuid.uuid4()
                rows.append((n, took, floor_s(libpq, n, eager), rss_mb(api.pid)))
                print(
                    f"n={n:>9,}: submit {took:6.2f} s, floor {rows[-1][2]:6.2f} s, "
                    f"API RSS {rows[-1][3]:6.1f} MB, GET /v1/jobs max {max(gets):6.0f} ms "
                    f"over {len(gets)} requests during it",
                    flush=True,
                )
            claims = min(20_000, sizes[-1])
            lazy_rate = asyncio.run(claims_per_s(url, libpq, ours, eager, claims))
            eager_rate = asyncio.run(claims_per_s(url, libpq, eager, ours, claims))
            print(
                f"claiming {claims:,} tasks, 32 a claim: {lazy_rate:,.0f}/s (made by the "
                f"claims), {eager_rate:,.0f}/s (made at submit)"
            )
        finally:
            stop(procs)
            pg.stop()
    n, took, floor, rss = rows[-1]
    print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(
        f"submit: n={n} submit_s={took:.3f} eager_floor_s={floor:.2f} speedup={floor / took:.0f} "
        f"api_rss_growth_mb={rss - base_rss:.1f} get_max_ms={max(gets):.0f} "
        f"claim_per_s={lazy_rate:.0f} eager_claim_per_s={eager_rate:.0f}"
    )


if __name__ == "__main__":
    main()
