"""Generation service benchmark: jobs submitted over REST, made by worker processes.

1. Ceiling: simulator (own process) with zero latency and no limits; a job of N stories
   (20,000; --quick 3,000) made by 1 and then 2 worker processes. Stories per second from the
   job's creation until its last story is made and checked for near-duplicates (the job's
   completion on the database clock, plus the seconds until the indexer has checked every
   story; both parts are printed), and CPU milliseconds per story of the
   service processes (API + workers); the simulator's and Postgres' share is printed beside
   it. Baseline in the same run: the generator engine alone in this process (same simulator,
   no database, no queue) on N/4 stories; the ratio says what the store, queue and crash
   safety cost.
2. At the limit: simulator RPM=6,000 with median latency 1.5 s; two worker processes share
   the model's budget through Postgres (TINYSTORIES_MODEL_LIMITS). The sustained rate the
   provider admitted over its limit (the slope of the simulator's own counter, sampled every
   0.25 s) in a steady window that begins after the buckets' initial burst allowance has been
   spent (full: 60 s, --quick: 6 s), plus the share of 429 answers. A figure above 1.0 would
   mean the provider's limit is exceeded.

All processes (API, the two ceiling workers, the two at-limit workers) start together once,
in parallel; a worker that is not part of the current phase is held with SIGSTOP (it holds no
task then), so process start-up is paid once and never measured.

Last line: `service: stories_per_s=X cpu_ms_per_story=Y achieved_over_limit=Z`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import httpx
from service_procs import (
    TOKEN,
    base_env,
    cpu_s,
    free_port,
    hold,
    listener_pid,
    release,
    spawn,
    start_simulators,
    stop,
    tree_cpu_s,
    wait_for,
)

MODEL = "simulator-story-1"
RPM = 6000


class Service:
    """An API process plus worker processes on one database; started without waiting."""

    def __init__(self, url: str, home: Path, sim_url: str) -> None:
        self.url = url
        self.port = free_port()
        self.env = base_env(url, home, sim_url, TINYSTORIES_PORT=str(self.port))
        self.home = home
        self.api = spawn(["serve"], self.env, home / "api.log")
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=60,
        )

    def healthy(self) -> bool:
        if self.api.poll() is not None:
            raise SystemExit(f"the API exited; see {self.home / 'api.log'}")
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
        return procs

    @staticmethod
    def started(proc: subprocess.Popen) -> bool:
        if proc.poll() is not None:
            raise SystemExit(f"a worker exited; see {proc.log}")  # type: ignore[attr-defined]
        return b"worker started" in proc.log.read_bytes()  # type: ignore[attr-defined]

    def submit(self, n: int, seed: int) -> str:
        resp = self.http.post(
            "/v1/jobs", json={"n_stories": n, "budget_usd": 1000.0, "seed": seed, "model": MODEL}
        )
        resp.raise_for_status()
        return resp.json()["id"]

    def job(self, job_id: str) -> dict:
        return self.http.get(f"/v1/jobs/{job_id}").json()

    def close(self) -> None:
        # Nothing is left to save at the end of a run: no graceful shutdown to wait for.
        self.api.kill()
        self.api.wait()


def ceiling_run(
    svc: Service, procs: list[subprocess.Popen], n: int, others: dict[str, int]
) -> tuple[float, float]:
    """One job made by `procs`; `others` names pids whose CPU share is shown alongside."""
    n_workers = len(procs)
    service_pids = [p.pid for p in [*procs, svc.api]]
    cpu0 = sum(cpu_s(pid) for pid in service_pids)
    other0 = {name: tree_cpu_s(pid) for name, pid in others.items()}
    job_id = svc.submit(n, seed=n_workers)
    while True:
        job = svc.job(job_id)
        if job["status"] not in ("queued", "running"):
            break
        time.sleep(0.2)
    lag = dedup_lag_s(svc, job_id)
    cpu = sum(cpu_s(pid) for pid in service_pids) - cpu0
    other = {name: tree_cpu_s(pid) - other0[name] for name, pid in others.items()}
    elapsed = (
        datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["created_at"])
    ).total_seconds()
    made = job["completed"] + job["rejected"]
    # End to end: until the last story is also checked for near-duplicates.
    rate = made / (elapsed + lag)
    shares = " ".join(f"{name}_cpu_ms_per_story={v * 1000 / made:.2f}" for name, v in other.items())
    print(
        f"  ceiling workers={n_workers} stories={made} failed={job['failed']} "
        f"made_in_s={elapsed:.1f} then_checked_in_s={lag:.2f} made_per_s={made / elapsed:.1f} "
        f"stories_per_s={rate:.1f} cpu_ms_per_story={cpu * 1000 / made:.2f} {shares}",
        flush=True,
    )
    return rate, cpu * 1000 / made


def dedup_lag_s(svc: Service, job_id: str) -> float:
    """Seconds from seeing the job complete until the indexer has checked all its stories
    (CPU spent meanwhile is counted in the story cost)."""
    import psycopg

    from service.store.exports import libpq_url

    start = time.monotonic()
    with psycopg.connect(libpq_url(svc.url), autocommit=True) as conn:
        while conn.execute(
            "SELECT count(*) FROM stories WHERE job_id = %s AND accepted AND dedup_status IS NULL",
            (job_id,),
        ).fetchone()[0]:
            time.sleep(0.02)
    return time.monotonic() - start


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

    # Untimed warm-up: the checker's word lists and the client's connections load lazily.
    await asyncio.gather(*(one(r) for r in recipes[:64]))
    start = time.monotonic()
    await asyncio.gather(*(one(r) for r in recipes))
    elapsed = time.monotonic() - start
    await client.aclose()
    return n / elapsed


def slope_per_s(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, cumulative count) samples."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / n
    mean_k = sum(k for _, k in points) / n
    cov = sum((t - mean_t) * (k - mean_k) for t, k in points)
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return cov / var if var else 0.0


def at_limit(svc: Service, procs: list[subprocess.Popen], sim_url: str, window_s: float) -> float:
    """Requests the provider admitted per minute over its limit, seen by the provider itself.

    The simulator's counters are sampled every 0.25 s: what it admitted and what it answered
    with 429, at the moment the requests arrived (no waiting for the service to write them).
    """
    # The Postgres bucket starts with 1 s of refill and each process may hold a 0.2 s lease.
    # Demand (320 in flight / ~1.8 s mean latency) is ~1.8x the limit, but the workers stall
    # for a moment at their first answers (first-story imports) and the bucket refills
    # meanwhile; by 4 s both bursts are spent, so the window starts there.
    warmup = 4.0
    stats = httpx.Client(base_url=sim_url, timeout=5)

    def counters() -> tuple[float, int, int]:
        body = stats.get("/simulator/stats").json()
        return time.monotonic(), int(body["admitted"]), int(body["rejected"])

    base = counters()
    # Enough tasks that the workers stay busy past the window.
    job_id = svc.submit(int(RPM / 60 * (warmup + window_s + 4)), seed=77)
    samples = [counters()]
    while samples[-1][1] + samples[-1][2] == base[1] + base[2]:
        if samples[-1][0] - base[0] > 60:
            raise SystemExit("no at-limit request reached the simulator in 60 s")
        time.sleep(0.02)
        samples.append(counters())
    t0 = samples[-1][0]
    samples = [samples[-1]]
    while samples[-1][0] < t0 + warmup + window_s:
        time.sleep(max(0.0, t0 + 0.25 * len(samples) - time.monotonic()))
        samples.append(counters())
    stats.close()
    svc.http.post(f"/v1/jobs/{job_id}/cancel")
    for p in procs:
        p.kill()
        p.wait()
    per_s = [samples[i + 4][1] - samples[i][1] for i in range(0, len(samples) - 4, 4)]
    print(
        "  at_limit admitted per second from the first request: " + " ".join(map(str, per_s)),
        file=sys.stderr,
        flush=True,
    )
    window = [(t - t0, a, r) for t, a, r in samples if t - t0 >= warmup]
    span = window[-1][0] - window[0][0]
    admitted = window[-1][1] - window[0][1]
    limited = window[-1][2] - window[0][2]
    achieved = slope_per_s([(t, a) for t, a, _ in window]) * 60 / RPM
    share429 = limited / max(admitted + limited, 1)
    print(
        f"  at_limit rpm_limit={RPM} admitted={admitted} window_s={span:.1f} "
        f"count_over_limit={admitted / span * 60 / RPM:.3f} "
        f"achieved_over_limit={achieved:.3f} rate429={share429:.4f}",
        flush=True,
    )
    return achieved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    args = parser.parse_args()
    # --quick keeps the whole run near a minute on a 2-core machine.
    n = 3000 if args.quick else 20000
    window = 6.0 if args.quick else 60.0
    t0 = time.monotonic()

    def phase(name: str) -> None:
        print(f"  [{time.monotonic() - t0:5.1f} s] {name}", file=sys.stderr, flush=True)

    from generator.simulator import SimulatorConfig
    from service.migrate import upgrade
    from service.pgserver import EmbeddedPostgres, embedded_url

    root = Path(tempfile.mkdtemp(prefix="bench-service-"))
    server = EmbeddedPostgres(root / "pg")
    try:
        with ExitStack() as stack:
            (sim_url, limit_sim_url), sims = start_simulators(
                [
                    SimulatorConfig(seed=1),
                    SimulatorConfig(rpm=RPM, latency_median_s=1.5, seed=5),
                ]
            )
            stack.enter_context(sims)
            # At the end nothing in flight matters: skip the simulators' graceful shutdown.
            sim_pids = [listener_pid(u) for u in (sim_url, limit_sim_url)]
            stack.callback(lambda: [os.kill(pid, signal.SIGKILL) for pid in sim_pids])
            url = embedded_url(root / "pg")
            upgrade(url)
            phase("database and simulators ready")
            svc = Service(url, root, sim_url)
            stack.callback(svc.close)
            ceiling = svc.workers(2, concurrency=64)
            limited = svc.workers(
                2,
                concurrency=160,
                TINYSTORIES_MODEL_LIMITS=json.dumps({MODEL: {"rpm": RPM}}),
                TINYSTORIES_SIMULATOR_BASE_URL=limit_sim_url,
            )
            stack.callback(stop, ceiling + limited)
            # Hold each at-limit worker as soon as it is up so the others start faster.
            pending = list(limited)

            def all_up() -> bool:
                for p in list(pending):
                    if Service.started(p):
                        hold([p], url)
                        pending.remove(p)
                return not pending and all(map(Service.started, ceiling)) and svc.healthy()

            wait_for(all_up, 120, "the API and workers")
            phase("API and workers started")
            # Warm-up job: first-story imports and connection pools are not measured.
            warm = svc.submit(128, seed=999)
            wait_for(
                lambda: svc.job(warm)["status"] not in ("queued", "running"), 60, "the warm-up"
            )
            hold(ceiling[1:], url)
            phase("warm-up done")
            base = asyncio.run(engine_only(sim_url, max(n // 4, 250)))
            print(f"  baseline engine_only stories_per_s={base:.1f}", flush=True)
            info = server.running()
            others = {"simulator": sim_pids[0]}
            if info is not None:
                others["postgres"] = info.pid
            one_rate, _ = ceiling_run(svc, ceiling[:1], n, others)
            release(ceiling[1:])
            two_rate, two_cpu = ceiling_run(svc, ceiling, n, others)
            phase("ceiling done")
            stop(ceiling, timeout=10)
            release(limited)
            achieved = at_limit(svc, limited, limit_sim_url, window)
            phase("at-limit done")
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
