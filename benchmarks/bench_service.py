"""Generation service benchmark: jobs submitted over REST, made by worker processes.

1. Ceiling: simulator (own process) with zero latency and no limits; a job of N stories
   (20,000; --quick 1,500) made by 1 and then 2 worker processes. Stories per second from
   submit to the job's completion, and CPU milliseconds per story of the service processes
   (API + workers). Baseline in the same run: the generator engine alone in this process
   (same simulator, no database, no queue) on N/6 stories; the ratio says what the store,
   queue and crash safety cost.
2. At the limit: simulator RPM=6,000 with median latency 1.5 s; two worker processes share
   the model's budget through Postgres (TINYSTORIES_MODEL_LIMITS). Requests sent per minute
   in the steady window over the limit, and the share of 429 answers.

Last line: `service: stories_per_s=X cpu_ms_per_story=Y achieved_over_limit=Z`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil
import psycopg

TOKEN = "bench-token"
MODEL = "simulator-story-1"
RPM = 6000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_env(url: str, home: Path, sim_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env.update(
        {
            "DATABASE_URL": url,
            "TINYSTORIES_HOME": str(home),
            "TINYSTORIES_ADMIN_TOKEN": TOKEN,
            "TINYSTORIES_SIMULATOR_BASE_URL": sim_url,
        }
    )
    env.update(extra)
    return env


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    handle = open(log, "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "service", *args], env=env, stdout=handle, stderr=subprocess.STDOUT
    )


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def cpu_s(proc: subprocess.Popen) -> float:
    try:
        times = psutil.Process(proc.pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Service:
    """An API process plus worker processes on one database and one simulator."""

    def __init__(self, url: str, home: Path, sim_url: str, **extra: str) -> None:
        self.port = free_port()
        self.env = base_env(url, home, sim_url, TINYSTORIES_PORT=str(self.port), **extra)
        self.home = home
        self.api = spawn(["serve"], self.env, home / "api.log")
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )
        wait_for(self._healthy, 120, "the API")

    def _healthy(self) -> bool:
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def workers(self, n: int, concurrency: int, **env: str) -> list[subprocess.Popen]:
        procs = []
        for i in range(n):
            log = self.home / f"worker-{time.monotonic_ns()}-{i}.log"
            args = ["worker", "--concurrency", str(concurrency)]
            procs.append(spawn(args, {**self.env, **env}, log))
            procs[-1].log = log  # type: ignore[attr-defined]
        wait_for(
            lambda: all(b"worker started" in p.log.read_bytes() for p in procs), 120, "workers"
        )
        return procs

    def submit(self, n: int, seed: int) -> str:
        resp = self.http.post(
            "/v1/jobs", json={"n_stories": n, "budget_usd": 1000.0, "seed": seed, "model": MODEL}
        )
        resp.raise_for_status()
        return resp.json()["id"]

    def job(self, job_id: str) -> dict:
        return self.http.get(f"/v1/jobs/{job_id}").json()

    def close(self) -> None:
        stop([self.api])


def ceiling_run(svc: Service, procs: list[subprocess.Popen], n: int) -> tuple[float, float]:
    n_workers = len(procs)
    cpu0 = sum(cpu_s(p) for p in [*procs, svc.api])
    start = time.monotonic()
    job_id = svc.submit(n, seed=n_workers)
    while True:
        job = svc.job(job_id)
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.1)
    elapsed = time.monotonic() - start
    cpu = sum(cpu_s(p) for p in [*procs, svc.api]) - cpu0
    made = job["completed"] + job["rejected"]
    rate = made / elapsed
    print(
        f"  ceiling workers={n_workers} stories={made} failed={job['failed']} "
        f"seconds={elapsed:.1f} stories_per_s={rate:.1f} cpu_ms_per_story={cpu * 1000 / made:.2f}",
        flush=True,
    )
    return rate, cpu * 1000 / made


async def engine_only(sim_url: str, n: int, concurrency: int = 64) -> float:
    """Baseline: the generator engine alone, no database."""
    from generator.checks import StoryChecker
    from generator.client import ChatClient
    from generator.engine import StoryEngine
    from generator.pricing import PriceTable
    from generator.ratelimit import LocalRateLimiter
    from generator.retry import RetryPolicy
    from vocab import RecipeSampler, default_vocabulary

    client = ChatClient(base_url=sim_url, api_key="x", provider="simulator")
    engine = StoryEngine(
        client=client,
        limiter=LocalRateLimiter(),
        pricing=PriceTable.load(),
        retry=RetryPolicy(),
        checker=StoryChecker(default_vocabulary()),
    )
    sampler = RecipeSampler()
    recipes = [sampler.recipe(99, i) for i in range(n)]
    sem = asyncio.Semaphore(concurrency)

    async def one(recipe) -> None:
        async with sem:
            await engine.story(recipe, model=MODEL, max_tokens=600)

    start = time.monotonic()
    await asyncio.gather(*(one(r) for r in recipes))
    elapsed = time.monotonic() - start
    await client.aclose()
    return n / elapsed


def at_limit(svc: Service, url: str, window_s: float) -> tuple[float, float]:
    from generator.simulator import SimulatorConfig, run_simulator

    config = SimulatorConfig(rpm=RPM, latency_median_s=1.5, seed=5)
    limits = json.dumps({MODEL: {"rpm": RPM}})
    with run_simulator(config, subprocess_mode=True) as sim_url:
        procs = svc.workers(
            2,
            concurrency=160,
            TINYSTORIES_MODEL_LIMITS=limits,
            TINYSTORIES_SIMULATOR_BASE_URL=sim_url,
        )
        try:
            job_id = svc.submit(int(RPM / 60 * (window_s + 20)), seed=77)
            warmup = 3.0
            time.sleep(warmup + window_s)
            svc.http.post(f"/v1/jobs/{job_id}/cancel")
        finally:
            stop(procs)
    libpq = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(libpq) as conn:
        first = conn.execute(
            "SELECT min(created_at) FROM requests WHERE job_id = %s", (job_id,)
        ).fetchone()[0]
        sent, limited = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status = 429) FROM requests "
            "WHERE job_id = %s AND created_at >= %s + make_interval(secs => %s) "
            "AND created_at < %s + make_interval(secs => %s)",
            (job_id, first, warmup, first, warmup + window_s),
        ).fetchone()
    achieved = sent / window_s * 60 / RPM
    share429 = limited / max(sent, 1)
    print(
        f"  at_limit rpm_limit={RPM} sent={sent} window_s={window_s:.0f} "
        f"achieved_over_limit={achieved:.3f} rate429={share429:.4f}",
        flush=True,
    )
    return achieved, share429


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (< 45 s)")
    args = parser.parse_args()
    # --quick keeps the whole run under 45 s on a 2-core machine (the 3,000 stories
    # per ceiling run alone take ~40 s there).
    n = 1500 if args.quick else 20000
    window = 6.0 if args.quick else 60.0

    from generator.simulator import SimulatorConfig, run_simulator
    from service.migrate import upgrade
    from service.pgserver import EmbeddedPostgres, embedded_url

    root = Path(tempfile.mkdtemp(prefix="bench-service-"))
    server = EmbeddedPostgres(root / "pg")
    try:
        url = embedded_url(root / "pg")
        upgrade(url)
        with ExitStack() as stack:
            sim_url = stack.enter_context(
                run_simulator(SimulatorConfig(seed=1), subprocess_mode=True)
            )
            base = asyncio.run(engine_only(sim_url, max(n // 6, 250)))
            print(f"  baseline engine_only stories_per_s={base:.1f}", flush=True)
            svc = Service(url, root, sim_url)
            stack.callback(svc.close)
            first = svc.workers(1, concurrency=64)
            stack.callback(stop, first)
            one_rate, _ = ceiling_run(svc, first, n)
            second = svc.workers(1, concurrency=64)
            stack.callback(stop, second)
            two_rate, two_cpu = ceiling_run(svc, first + second, n)
            stop(first + second)
            achieved, _ = at_limit(svc, url, window)
        print(
            f"  ratio service_2_workers/engine_only={two_rate / base:.2f} "
            f"2_workers/1_worker={two_rate / one_rate:.2f}"
        )
        print(
            f"service: stories_per_s={two_rate:.1f} cpu_ms_per_story={two_cpu:.2f} "
            f"achieved_over_limit={achieved:.3f}"
        )
    finally:
        server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
